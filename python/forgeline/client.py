"""``forgeline.Client``: every route of the forgeline HTTP API (docs/api.md)
as a typed method, on httpx.

One client holds one connection pool and one bearer token; it is
thread-safe, so a :class:`~forgeline.Worker` and its handler threads share
it. Errors are the typed exceptions of :mod:`forgeline.errors`; which
failures are retried, and how long, is the rule in :mod:`forgeline._http`
and docs/sdk-python.md.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import httpx

from ._api_reviews import OUTCOMES, ReviewsAPI
from ._api_streams import StreamsAPI
from ._api_tasks import TasksAPI
from ._api_workers import WorkerProtocolAPI
from ._http import HttpCore, RetryPolicy
from ._version import __version__
from .models import Health

__all__ = ["Client", "DEFAULT_URL", "OUTCOMES"]

#: Where ``forgeline serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:7878"


class Client(TasksAPI, StreamsAPI, WorkerProtocolAPI, ReviewsAPI):
    """A client of one forgeline server.

    Args:
        url: The server's base URL. Default: ``$FORGELINE_URL``, else
            ``http://127.0.0.1:7878``.
        token: A bearer token (JWT) whose roles allow the calls you make.
            Default: ``$FORGELINE_TOKEN``.
        timeout: Seconds for each HTTP request (a lease long-poll gets its
            ``wait_ms`` on top).
        retry: How often and how long failed calls are retried
            (:class:`~forgeline.RetryPolicy`); ``RetryPolicy(max_retries=0)``
            turns retrying off.
        auto_idempotency_key: Give every :meth:`submit` without an
            ``idempotency_key`` a generated one, so that a submit whose
            answer was lost (503, reset) can be retried without creating a
            second task. When False, such submits are retried only when
            nothing reached the server (429, connection refused).
        headers: Extra headers sent with every request.
        transport: An ``httpx.BaseTransport`` to send requests through
            (tests, proxies, instrumentation).
        verify: TLS verification, as httpx takes it.

    Use it as a context manager, or call :meth:`close`, to release its
    connections.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retry: Optional[RetryPolicy] = None,
        auto_idempotency_key: bool = True,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.BaseTransport] = None,
        verify: Union[bool, str] = True,
    ) -> None:
        self.url = (url or os.environ.get("FORGELINE_URL") or DEFAULT_URL).rstrip("/")
        self.auto_idempotency_key = auto_idempotency_key
        self._core = HttpCore(
            self.url,
            token if token is not None else os.environ.get("FORGELINE_TOKEN"),
            timeout=timeout,
            retry=retry or RetryPolicy(),
            headers=headers,
            transport=transport,
            verify=verify,
            user_agent=f"forgeline-python/{__version__}",
        )

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Closes the client's connections."""
        self._core.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of this client."""
        return self._core.retry

    @property
    def timeout(self) -> float:
        """Seconds each HTTP request may take (a long-poll gets its wait on top)."""
        return self._core.timeout

    # -- health ------------------------------------------------------------

    def health(self, probe: str = "ready") -> Health:
        """A health probe: ``live``, ``startup`` or ``ready`` (no token needed).
        A 503 is an answer here, not an error: read ``.ok``."""
        if probe not in ("live", "startup", "ready"):
            raise ValueError(f"probe must be live, startup or ready; got {probe!r}")
        response = self._core.request(
            "GET", f"/health/{probe}", idempotent=True, accept_statuses=frozenset({503})
        )
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        checks = body.get("checks")
        return Health(
            ok=response.status_code == 200,
            status_code=response.status_code,
            checks=dict(checks) if isinstance(checks, dict) else {},
            raw=body,
        )
