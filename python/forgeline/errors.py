"""Typed exceptions: one class per error ``code`` the server sends.

Every error body of the forgeline API has the same shape (docs/api.md,
"Errors")::

    {"error": {"code": "stale_lease", "message": "...", "request_id": "...", "details": {...}}}

:func:`error_from_response` turns such a response into the most specific
class below, keyed by ``code`` first and by HTTP status when the code is
unknown (a newer server, or a proxy's HTML error page). Every exception
carries the server's ``code``, ``message``, ``request_id``, ``details`` and
the HTTP ``status``, so callers can branch on a class (``except
forgeline.StaleLease``) or on the code string.

The hierarchy::

    ForgelineError
    ├── TransportError            no HTTP answer (connection refused, reset, timeout)
    ├── InvalidRequest            400 bad_request / malformed_json, 422 invalid
    │   └── GuardrailBlocked      422 guardrail_blocked (policy, stage)
    ├── Unauthorized              401
    ├── Forbidden                 403
    ├── NotFound                  404
    ├── MethodNotAllowed          405
    ├── Conflict                  409, and one subclass per 409 code:
    │   ├── StaleLease, IllegalTransition, IdempotencyKeyReused, NotDead,
    │   └── TicketClosed, TicketHeld, AlreadyDecided, StaleDossier, NotHeld
    ├── PayloadTooLarge           413
    ├── RateLimited               429 (retry_after)
    ├── ServerError               500 and other 5xx
    └── Unavailable               503 store_unavailable, 502, 504 (retry_after)
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, Mapping

import httpx

__all__ = [
    "AlreadyDecided",
    "Conflict",
    "Forbidden",
    "ForgelineError",
    "GuardrailBlocked",
    "IdempotencyKeyReused",
    "IllegalTransition",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotDead",
    "NotFound",
    "NotHeld",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "StaleDossier",
    "StaleLease",
    "TicketClosed",
    "TicketHeld",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
    "parse_retry_after",
]


class ForgelineError(Exception):
    """Base class of every error this SDK raises for a server interaction.

    Attributes:
        message: The server's human-readable message (already redacted by
            the server), or a description of what failed.
        code: The server's machine-readable ``error.code`` (``"not_found"``,
            ``"stale_lease"``...), or ``None`` when the response had no
            forgeline error body.
        status: The HTTP status, or ``None`` when no response arrived.
        request_id: The server's ``X-Request-ID`` for the failed request
            (quote it when reporting a problem: it is in the server's logs
            and audit records), or ``None``.
        details: ``error.details`` (``{"field": ...}`` for validation
            errors, ``{"policy", "stage"}`` for guardrail blocks), else ``{}``.
        retry_after: Seconds the server asked the client to wait
            (``Retry-After``), or ``None``.
        method, url: The request that failed, when there was one.
    """

    #: Whether retrying the same work later may succeed. The worker uses it
    #: to decide between a retryable and a final ``/fail``.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after
        self.method = method
        self.url = url

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        head = " ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.request_id:
            text += f" (request_id {self.request_id})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"status={self.status!r}, request_id={self.request_id!r})"
        )


class TransportError(ForgelineError):
    """No HTTP answer: the connection was refused, reset or timed out.

    ``sent`` tells whether the request may have reached the server. When it
    is ``False`` (connection refused, connect timeout) nothing was applied.
    When it is ``True`` the server may or may not have acted on it.
    """

    retryable = True

    def __init__(self, message: str, *, sent: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.sent = sent


class InvalidRequest(ForgelineError):
    """400 ``bad_request`` / ``malformed_json`` or 422 ``invalid``: the request
    itself is wrong. ``field`` names the offending field when the server said."""

    @property
    def field(self) -> str | None:
        """The dotted path of the offending field (``details.field``), if any."""
        value = self.details.get("field")
        return value if isinstance(value, str) else None


class GuardrailBlocked(InvalidRequest):
    """422 ``guardrail_blocked``: a guardrail policy with ``verdict = "block"``
    refused a submission (``input``), a tool call (``tool``) or a result
    (``output``)."""

    @property
    def policy(self) -> str | None:
        """The id of the blocking policy."""
        value = self.details.get("policy")
        return value if isinstance(value, str) else None

    @property
    def stage(self) -> str | None:
        """``input``, ``tool`` or ``output``."""
        value = self.details.get("stage")
        return value if isinstance(value, str) else None


class Unauthorized(ForgelineError):
    """401: no bearer token, or one that fails a check (expired, bad signature...)."""


class Forbidden(ForgelineError):
    """403: the token lacks a role the route allows, or an object rule forbids
    the call (another principal's lease or task, a ticket someone else holds)."""


class NotFound(ForgelineError):
    """404: no such task, run, lease or review ticket (or no such route)."""


class MethodNotAllowed(ForgelineError):
    """405: the path exists, but not with this method."""


class Conflict(ForgelineError):
    """409: the request conflicts with the current state. Subclasses name the code."""


class StaleLease(Conflict):
    """409 ``stale_lease``: the fencing token is not the lease's, or the lease
    ended or expired. The task may have been redelivered to another worker:
    drop the work's result, never retry the call."""


class IllegalTransition(Conflict):
    """409 ``illegal_transition``: the task state machine forbids the change
    (e.g. cancelling a completed task)."""


class IdempotencyKeyReused(Conflict):
    """409 ``idempotency_key_reused``: the ``Idempotency-Key`` was used before
    with a different body."""


class NotDead(Conflict):
    """409 ``not_dead``: a dead-letter requeue of a task that is not ``dead``."""


class TicketClosed(Conflict):
    """409 ``ticket_closed``: the review ticket is decided, expired or cancelled."""


class TicketHeld(Conflict):
    """409 ``ticket_held``: another reviewer holds the ticket."""


class AlreadyDecided(Conflict):
    """409 ``already_decided``: this reviewer already gave a verdict on the ticket."""


class NotHeld(Conflict):
    """409 ``not_held``: a release of a ticket that is not claimed or assigned."""


class StaleDossier(Conflict):
    """409 ``stale_dossier``: the decision named a dossier hash that is no
    longer the ticket's current one: the dossier changed since it was read.
    Reload the review, look again, decide again."""

    @property
    def current_hash(self) -> str | None:
        """The current dossier hash (the error's ``details.current_hash``)."""
        value = (self.details or {}).get("current_hash")
        return value if isinstance(value, str) else None


class PayloadTooLarge(ForgelineError):
    """413 ``too_large``: the body, a payload or a result is over the server's limit."""


class RateLimited(ForgelineError):
    """429 ``rate_limited``: the principal's bucket for this route class is
    empty. ``retry_after`` says when to come back. The request was refused
    before it did anything, so retrying it is always safe."""

    retryable = True


class ServerError(ForgelineError):
    """A 5xx other than 503/502/504 (``internal``)."""


class Unavailable(ForgelineError):
    """503 ``store_unavailable`` (or a proxy's 502/504): the server could not
    complete the request. It may or may not have been applied."""

    retryable = True


_BY_CODE: dict[str, type[ForgelineError]] = {
    "bad_request": InvalidRequest,
    "malformed_json": InvalidRequest,
    "invalid": InvalidRequest,
    "guardrail_blocked": GuardrailBlocked,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "illegal_transition": IllegalTransition,
    "stale_lease": StaleLease,
    "idempotency_key_reused": IdempotencyKeyReused,
    "not_dead": NotDead,
    "ticket_closed": TicketClosed,
    "ticket_held": TicketHeld,
    "already_decided": AlreadyDecided,
    "stale_dossier": StaleDossier,
    "not_held": NotHeld,
    "too_large": PayloadTooLarge,
    "rate_limited": RateLimited,
    "internal": ServerError,
    "store_unavailable": Unavailable,
}

_BY_STATUS: dict[int, type[ForgelineError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an
    HTTP date. ``None`` when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(response: httpx.Response) -> ForgelineError:
    """The typed exception for an error response (status >= 400).

    The body is read when it is not already; a body that is not a forgeline
    error object gives an exception with ``code = None`` and the start of
    the body as its message.
    """
    status = response.status_code
    request_id = response.headers.get("x-request-id")
    code: str | None = None
    message = ""
    details: Mapping[str, Any] | None = None
    try:
        response.read()
        body = json.loads(response.content) if response.content else None
    except (ValueError, httpx.HTTPError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = str(error.get("message") or "")
        request_id = error.get("request_id") or request_id
        raw_details = error.get("details")
        details = raw_details if isinstance(raw_details, dict) else None
    if not message:
        text = ""
        try:
            text = response.text.strip()
        except (UnicodeDecodeError, httpx.HTTPError):
            pass
        message = text[:500] or (response.reason_phrase or f"HTTP {status}")
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ForgelineError
    return cls(
        message,
        code=code,
        status=status,
        request_id=request_id,
        details=details,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        method=response.request.method if _has_request(response) else None,
        url=str(response.request.url) if _has_request(response) else None,
    )


def _has_request(response: httpx.Response) -> bool:
    try:
        _ = response.request
    except RuntimeError:
        return False
    return True
