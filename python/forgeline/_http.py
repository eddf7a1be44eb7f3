"""The one HTTP round trip: authentication, JSON bodies, typed errors and
the retry rule.

The retry rule (docs/sdk-python.md, "Retries"), in one place:

* A **429** is retried for every call: the rate limiter refuses a request
  before any handler runs, so nothing was applied.
* A connection that could not be made (refused, connect or pool timeout) is
  retried for every call: the request never left.
* A **503/502/504**, and a connection that broke after the request was sent
  (reset, read timeout), are retried only for calls marked *idempotent*:
  reads, heartbeats, review claims, worker status reports, and submits that
  carry an ``Idempotency-Key`` (the server replays the first task for the
  same key and body). Complete, fail, lease, event reports, cancel,
  requeue, review release/assign/decide are not: the first attempt may have
  been applied, and a blind second one could double-apply or be misreported.
* Waits honour ``Retry-After`` when the server sends it, else an
  exponential backoff with jitter; both bounded by :class:`RetryPolicy`
  (``max_retries`` attempts after the first, ``max_wait`` seconds of
  sleeping in total). A ``Retry-After`` longer than what is left of
  ``max_wait`` raises at once instead of sleeping in vain.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import httpx

from .errors import ForgelineError, TransportError, error_from_response

__all__ = ["RetryPolicy", "HttpCore", "NO_BODY", "encode_json"]

log = logging.getLogger("forgeline.http")

#: Marks a request without a body (``None`` is the JSON value ``null``).
NO_BODY: Any = object()

# Statuses that mean "not applied, or maybe applied": retried for idempotent
# calls only. 429 is handled apart (never applied).
_MAYBE_APPLIED_STATUSES = frozenset({502, 503, 504})

# Transport errors raised before the request was written: nothing reached
# the server, so any call may be retried.
_NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a call is retried (see the module doc for *which*
    failures are retried).

    Attributes:
        max_retries: Retries after the first attempt (0 disables retrying).
        max_wait: Most seconds spent sleeping between attempts of one call,
            in total. A ``Retry-After`` that does not fit raises at once.
        backoff_base: First backoff delay in seconds, when the server gives
            no ``Retry-After``; doubles with every retry.
        backoff_max: Longest single backoff delay in seconds.
    """

    max_retries: int = 5
    max_wait: float = 30.0
    backoff_base: float = 0.2
    backoff_max: float = 5.0

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based): ``base * 2**retry``
        capped at ``backoff_max``, with equal jitter (a random point in the
        upper half)."""
        delay = min(self.backoff_max, self.backoff_base * (2.0**retry))
        return delay / 2 + random.uniform(0, delay / 2)


def encode_json(value: Any) -> bytes:
    """Compact JSON bytes. A body is encoded once, so every retry sends the
    same bytes (the server compares idempotent submits byte for byte)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class HttpCore:
    """Sends requests to one server with one token and applies the retry rule.

    Thread-safe: an ``httpx.Client`` may be shared by threads, and this
    class keeps no per-request state.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        headers: Mapping[str, str] | None,
        transport: httpx.BaseTransport | None,
        verify: bool | str,
        user_agent: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base_headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            base_headers["Authorization"] = f"Bearer {token}"
        base_headers.update(headers or {})
        self.retry = retry
        self.timeout = timeout
        self._sleep = sleep
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=base_headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            verify=verify,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Closes the connection pool."""
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = NO_BODY,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        timeout: float | None = None,
        accept_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """One logical call: sends it, retries it by the rule, and returns a
        successful response (or one whose status is in ``accept_statuses``);
        raises the typed :class:`~forgeline.ForgelineError` otherwise."""
        content: bytes | None = None
        all_headers = dict(headers or {})
        if body is not NO_BODY:
            content = encode_json(body)
            all_headers["Content-Type"] = "application/json"
        request = self.http.build_request(
            method,
            path,
            content=content,
            params=_clean_params(params),
            headers=all_headers,
            timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        return self.send(request, idempotent=idempotent, accept_statuses=accept_statuses)

    def send(
        self,
        request: httpx.Request,
        *,
        idempotent: bool,
        stream: bool = False,
        accept_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Sends a built request with the retry rule. With ``stream=True`` the
        successful response's body is left unread (the caller closes it)."""
        retries = 0
        waited = 0.0
        while True:
            error: ForgelineError
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as e:
                sent = not isinstance(e, _NOT_SENT_ERRORS)
                error = TransportError(
                    f"{type(e).__name__}: {e or 'connection failed'}",
                    sent=sent,
                    method=request.method,
                    url=str(request.url),
                )
                error.__cause__ = e
                may_retry = idempotent or not sent
            else:
                if response.status_code < 400 or response.status_code in accept_statuses:
                    return response
                try:
                    error = error_from_response(response)
                finally:
                    response.close()
                status = response.status_code
                may_retry = status == 429 or (idempotent and status in _MAYBE_APPLIED_STATUSES)
            if not may_retry or retries >= self.retry.max_retries:
                raise error
            delay = error.retry_after if error.retry_after is not None else self.retry.backoff(retries)
            if waited + delay > self.retry.max_wait:
                raise error
            log.info(
                "forgeline: %s %s failed (%s); retry %d/%d in %.2fs",
                request.method,
                request.url.path,
                error.code or type(error).__name__,
                retries + 1,
                self.retry.max_retries,
                delay,
            )
            self._sleep(delay)
            waited += delay
            retries += 1

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request`, then the response body parsed as JSON."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as e:
            raise ForgelineError(
                f"the server answered {method} {path} with a body that is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from e


def _clean_params(
    params: Mapping[str, Any] | list[tuple[str, Any]] | None,
) -> httpx.QueryParams | None:
    """Query parameters without ``None`` values; booleans as ``true``/``false``."""
    if params is None:
        return None
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    out: list[tuple[str, str]] = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((key, str(value)))
    return httpx.QueryParams(tuple(out))
