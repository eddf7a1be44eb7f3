"""The Python SDK of forgeline: a typed client of its HTTP API and a worker.

Modules, top to bottom (a module imports only those below it):

* :mod:`forgeline.worker` — :class:`Worker`: leases, heartbeats, handler
  threads, fencing, shutdown; :class:`Retry` and :class:`Fatal`.
* :mod:`forgeline.context` — :class:`TaskContext`, what a handler gets:
  the task, batched agent/tool/verification events.
* :mod:`forgeline.client` — :class:`Client`: every route as a method.
* :mod:`forgeline.stream` — :class:`EventStream`: SSE that resumes with
  ``Last-Event-ID`` after a dropped connection.
* :mod:`forgeline.models` — typed views of the server's JSON.
* :mod:`forgeline._http` — the HTTP round trip and the retry rule
  (:class:`RetryPolicy`).
* :mod:`forgeline.errors` — one exception class per error code.

docs/sdk-python.md is the guide; docs/api.md the API reference.
"""

from __future__ import annotations

from ._http import RetryPolicy
from ._version import __version__
from .client import DEFAULT_URL, Client
from .context import TaskContext, Verification
from .errors import (
    AlreadyDecided,
    Conflict,
    Forbidden,
    ForgelineError,
    GuardrailBlocked,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidRequest,
    MethodNotAllowed,
    NotDead,
    NotFound,
    NotHeld,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    StaleDossier,
    StaleLease,
    TicketClosed,
    TicketHeld,
    TransportError,
    Unauthorized,
    Unavailable,
)
from .models import (
    TERMINAL_STATES,
    Event,
    EventsAck,
    Health,
    Lease,
    LeaseResult,
    Page,
    Paginator,
    ReviewFeedback,
    ReviewTicket,
    Task,
    WorkerInfo,
)
from .stream import EventStream
from .worker import Fatal, Handler, Retry, Worker, WorkerStats

__all__ = [
    "DEFAULT_URL",
    "TERMINAL_STATES",
    "AlreadyDecided",
    "Client",
    "Conflict",
    "Event",
    "EventStream",
    "EventsAck",
    "Fatal",
    "Forbidden",
    "ForgelineError",
    "GuardrailBlocked",
    "Handler",
    "Health",
    "IdempotencyKeyReused",
    "IllegalTransition",
    "InvalidRequest",
    "Lease",
    "LeaseResult",
    "MethodNotAllowed",
    "NotDead",
    "NotFound",
    "NotHeld",
    "Page",
    "Paginator",
    "PayloadTooLarge",
    "RateLimited",
    "Retry",
    "RetryPolicy",
    "ReviewFeedback",
    "ReviewTicket",
    "ServerError",
    "StaleDossier",
    "StaleLease",
    "Task",
    "TaskContext",
    "TicketClosed",
    "TicketHeld",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "Verification",
    "Worker",
    "WorkerInfo",
    "WorkerStats",
    "__version__",
]
