"""What every API mixin of :class:`~forgeline.Client` shares: the HTTP core,
path and parameter helpers, and opening an event stream."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional, Union
from urllib.parse import quote

import httpx

from ._http import HttpCore
from .stream import Seconds, duration_param

__all__ = ["APIBase", "bounds", "rfc3339", "seg", "stream_timeout", "with_max"]


class APIBase:
    """The state the API mixins use; :class:`~forgeline.Client` sets it."""

    _core: HttpCore
    auto_idempotency_key: bool

    def _open_stream(
        self,
        path: str,
        last_event_id: Optional[str],
        remaining: Optional[int],
        params: list[tuple[str, Any]],
        read_timeout: float,
    ) -> httpx.Response:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        request = self._core.http.build_request(
            "GET",
            path,
            params=with_max(params, remaining),
            headers=headers,
            timeout=stream_timeout(self._core.timeout, read_timeout),
        )
        return self._core.send(request, idempotent=True, stream=True)

def seg(value: str) -> str:
    """A path segment, percent-encoded so an id can never change the route."""
    return quote(str(value), safe="")


def rfc3339(value: Union[datetime, str]) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("run_at must be an aware datetime (give it a tzinfo, e.g. timezone.utc)")
    return value.isoformat()


def bounds(max_events: Optional[int], idle_timeout: Optional[Seconds]) -> list[tuple[str, Any]]:
    params: list[tuple[str, Any]] = []
    if max_events is not None:
        params.append(("max_events", max_events))
    if idle_timeout is not None:
        params.append(("idle_timeout", duration_param(idle_timeout)))
    return params


def with_max(params: list[tuple[str, Any]], remaining: Optional[int]) -> httpx.QueryParams:
    out = [(k, str(v)) for k, v in params if v is not None]
    if remaining is not None:
        out.append(("max_events", str(remaining)))
    return httpx.QueryParams(tuple(out))


def stream_timeout(timeout: float, read_timeout: float) -> httpx.Timeout:
    return httpx.Timeout(timeout, read=read_timeout)
