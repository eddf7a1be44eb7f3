"""Typed views of the server's JSON: tasks, events, leases, review tickets,
workers, pages.

Each class reads the fields the SDK and its users need most as attributes
and keeps the whole object in ``raw``, so a field added by a newer server is
never lost and an absent one never breaks parsing. docs/api.md is the
reference for every field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, TypeVar

__all__ = [
    "TERMINAL_STATES",
    "Event",
    "EventsAck",
    "Health",
    "Lease",
    "LeaseResult",
    "Page",
    "Paginator",
    "ReviewFeedback",
    "ReviewTicket",
    "Task",
    "WorkerInfo",
]

#: Task states after which nothing happens by itself (a ``dead`` task can
#: still be requeued by hand).
TERMINAL_STATES = frozenset({"completed", "failed", "dead", "cancelled"})

T = TypeVar("T")


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _opt_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class Task:
    """A task, in full (``GET /tasks/{id}``, submit, complete...) or in
    summary form (list routes: no ``payload``, ``result``, runs or events,
    which then read as ``None``/empty).

    Attributes:
        id: The task id (a ULID).
        state: One of ``scheduled``, ``queued``, ``running``, ``verifying``,
            ``awaiting_review``, ``completed``, ``failed``, ``dead``,
            ``cancelled``.
        queue, priority, labels: As submitted.
        attempts: Runs ever started.
        max_attempts: Leases before the task is dead-lettered.
        attempts_left: Attempts left in the current budget (None in summaries).
        payload, result: The submitted payload and the last accepted result.
        last_error: The last failure message, or None.
        state_detail: The state's data (``lease_id`` while running...).
        steps: As submitted.
        created_at, updated_at: RFC 3339 times.
        runs, events, reviews: Present on ``GET /tasks/{id}`` only.
        raw: The whole JSON object.
        withheld: What the server held back from this caller (``payload``,
            ``result``, ``step_output``, ``event_data``) when it may see only
            the task's metadata (``auth.visibility = "own"``); empty otherwise.
    """

    id: str
    state: str
    queue: str
    priority: int
    labels: dict[str, str]
    attempts: int
    max_attempts: int
    attempts_left: Optional[int]
    payload: Any
    result: Any
    last_error: Optional[str]
    state_detail: dict[str, Any]
    steps: list[Any]
    created_at: Optional[str]
    updated_at: Optional[str]
    runs: list[dict[str, Any]]
    events: list[Event]
    reviews: list[ReviewTicket]
    raw: dict[str, Any] = field(repr=False)
    withheld: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        """Builds a task from its JSON object."""
        left = data.get("attempts_left")
        return cls(
            id=str(data.get("id", "")),
            state=str(data.get("state", "")),
            queue=str(data.get("queue", "")),
            priority=_int(data.get("priority"), 5),
            labels={str(k): str(v) for k, v in _dict(data.get("labels")).items()},
            attempts=_int(data.get("attempts")),
            max_attempts=_int(data.get("max_attempts")),
            attempts_left=left if isinstance(left, int) else None,
            payload=data.get("payload"),
            result=data.get("result"),
            last_error=_opt_str(data.get("last_error")),
            state_detail=_dict(data.get("state_detail")),
            steps=list(data.get("steps") or []),
            created_at=_opt_str(data.get("created_at")),
            updated_at=_opt_str(data.get("updated_at")),
            runs=[_dict(r) for r in data.get("runs") or []],
            events=[Event.from_json(e) for e in data.get("events") or []],
            reviews=[ReviewTicket.from_json(r) for r in data.get("reviews") or []],
            raw=dict(data),
            withheld=[str(w) for w in data.get("withheld") or []],
        )

    @property
    def is_terminal(self) -> bool:
        """True in ``completed``, ``failed``, ``dead`` or ``cancelled``."""
        return self.state in TERMINAL_STATES

    @property
    def lease_id(self) -> Optional[str]:
        """The lease holding the task while it is ``running``/``verifying``."""
        return _opt_str(self.state_detail.get("lease_id"))


@dataclass(frozen=True)
class Event:
    """One event in the ``forgeline.task-event.v1`` envelope.

    Attributes:
        id: The global event id, 16 lowercase hex digits (the SSE ``id:``;
            pass it as ``last_event_id`` to resume after it).
        seq: The same id as an integer.
        type: The event type (``task_leased``, ``tool_invoked``...).
        time: When it happened (RFC 3339).
        task_id, queue: The task and its queue.
        run_id: The run it belongs to, if any.
        attempt: The task's ``attempts`` at the time.
        state: The task's state after the event, when it changed it.
        data: The type-specific data.
        trace_id: The task's trace id.
        raw: The whole JSON object.
    """

    id: str
    seq: int
    type: str
    time: str
    task_id: str
    queue: str
    run_id: Optional[str]
    attempt: int
    state: Optional[str]
    data: dict[str, Any]
    trace_id: Optional[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """Builds an event from its envelope."""
        return cls(
            id=str(data.get("id", "")),
            seq=_int(data.get("seq")),
            type=str(data.get("type", "")),
            time=str(data.get("time", "")),
            task_id=str(data.get("task_id", "")),
            queue=str(data.get("queue", "")),
            run_id=_opt_str(data.get("run_id")),
            attempt=_int(data.get("attempt")),
            state=_opt_str(data.get("state")),
            data=_dict(data.get("data")),
            trace_id=_opt_str(data.get("trace_id")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class ReviewFeedback:
    """What a reviewer asked for with ``changes_requested`` (on a later lease)."""

    ticket_id: str
    by: str
    comment: Optional[str]


@dataclass(frozen=True)
class Lease:
    """A task granted to a worker (``POST /queues/{queue}/lease``).

    Attributes:
        lease_id: The lease.
        token: The fencing token; every call on the lease sends it.
        deadline: When the lease expires unless extended (RFC 3339).
        run_id, attempt: The run this lease started and its attempt number.
        steps: The task's steps.
        task: The task, now ``running``.
        review_feedback: The last ``changes_requested`` verdict, if any.
        traceparent: The run's W3C trace context.
        raw: The whole grant JSON.
    """

    lease_id: str
    token: int
    deadline: str
    run_id: str
    attempt: int
    steps: list[Any]
    task: Task
    review_feedback: Optional[ReviewFeedback]
    traceparent: Optional[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lease:
        """Builds a lease from one entry of ``leases``."""
        fb = data.get("review_feedback")
        feedback = None
        if isinstance(fb, Mapping):
            feedback = ReviewFeedback(
                ticket_id=str(fb.get("ticket_id", "")),
                by=str(fb.get("by", "")),
                comment=_opt_str(fb.get("comment")),
            )
        return cls(
            lease_id=str(data.get("lease_id", "")),
            token=_int(data.get("token")),
            deadline=str(data.get("deadline", "")),
            run_id=str(data.get("run_id", "")),
            attempt=_int(data.get("attempt")),
            steps=list(data.get("steps") or []),
            task=Task.from_json(_dict(data.get("task"))),
            review_feedback=feedback,
            traceparent=_opt_str(data.get("traceparent")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class LeaseResult:
    """One item's answer from a batched ``complete_many`` / ``fail_many``.

    Attributes:
        lease_id: The lease the item named.
        status: 200, or the HTTP status the single-lease call would have
            answered (404, 409, 413, 422, 503).
        task: The task after the item was applied (``status`` 200).
        error_code, error_message: Why the item was refused (otherwise
            ``None``); ``stale_lease`` when the lease was lost.
    """

    lease_id: str
    status: int
    task: Optional[Task]
    error_code: Optional[str]
    error_message: Optional[str]

    @property
    def ok(self) -> bool:
        """Whether the item was applied."""
        return self.status == 200

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LeaseResult:
        """Builds a result from one entry of ``results``."""
        task = data.get("task")
        error = _dict(data.get("error"))
        return cls(
            lease_id=str(data.get("lease_id", "")),
            status=_int(data.get("status")),
            task=Task.from_json(task) if isinstance(task, Mapping) else None,
            error_code=_opt_str(error.get("code")),
            error_message=_opt_str(error.get("message")),
        )


@dataclass(frozen=True)
class EventsAck:
    """The answer to a worker's event report: how many events were stored,
    their ids, and the guardrail flags the batch raised."""

    accepted: int
    event_ids: list[str]
    guardrails: list[dict[str, Any]]


@dataclass(frozen=True)
class ReviewTicket:
    """A review ticket (``GET /reviews``, ``GET /reviews/{id}``, actions).

    Attributes:
        id, task_id, run_id, queue, priority: What is under review.
        state: ``open``, ``claimed``, ``assigned``, ``decided``, ``expired``
            or ``cancelled``.
        outcome: The deciding verdict of a ``decided`` ticket.
        holder: Who claimed it or has it assigned, or None.
        dossier_hash: The dossier hash *when the ticket opened*.
        current_dossier_hash: The hash a decision must send now; only in
            ``GET /reviews/{id}`` (``dossier.dossier_hash``), else None.
        dossier: The dossier (task, run, guardrails) on ``GET /reviews/{id}``.
        approvals, required_approvals: N-of-M progress.
        votes: Every verdict so far.
        raw: The whole JSON object.
    """

    id: str
    task_id: str
    run_id: Optional[str]
    queue: str
    priority: int
    state: str
    outcome: Optional[str]
    holder: Optional[str]
    dossier_hash: str
    approvals: int
    required_approvals: int
    votes: list[dict[str, Any]]
    dossier: Optional[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReviewTicket:
        """Builds a ticket from its JSON object."""
        dossier = data.get("dossier")
        return cls(
            id=str(data.get("id", "")),
            task_id=str(data.get("task_id", "")),
            run_id=_opt_str(data.get("run_id")),
            queue=str(data.get("queue", "")),
            priority=_int(data.get("priority"), 5),
            state=str(data.get("state", "")),
            outcome=_opt_str(data.get("outcome")),
            holder=_opt_str(data.get("holder")),
            dossier_hash=str(data.get("dossier_hash", "")),
            approvals=_int(data.get("approvals")),
            required_approvals=_int(data.get("required_approvals"), 1),
            votes=[_dict(v) for v in data.get("votes") or []],
            dossier=_dict(dossier) if isinstance(dossier, Mapping) else None,
            raw=dict(data),
        )

    @property
    def current_dossier_hash(self) -> Optional[str]:
        """The dossier hash a decision must name now (from ``GET /reviews/{id}``)."""
        if self.dossier is None:
            return None
        return _opt_str(self.dossier.get("dossier_hash"))

    @property
    def is_pending(self) -> bool:
        """True while the ticket is ``open``, ``claimed`` or ``assigned``."""
        return self.state in ("open", "claimed", "assigned")


@dataclass(frozen=True)
class WorkerInfo:
    """One entry of ``GET /workers``."""

    id: str
    status: str
    current_task: Optional[str]
    detail: Optional[str]
    last_seen: Optional[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerInfo:
        """Builds a worker record from its JSON object."""
        return cls(
            id=str(data.get("id", "")),
            status=str(data.get("status", "")),
            current_task=_opt_str(data.get("current_task")),
            detail=_opt_str(data.get("detail")),
            last_seen=_opt_str(data.get("last_seen")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Health:
    """A health probe's answer. ``ok`` is true on 200; ``checks`` names each
    check (``"ok"``/``"fail"``)."""

    ok: bool
    status_code: int
    checks: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list route: its items and the cursor of the next page
    (``None`` at the end). A page may hold fewer items than asked, even
    none, while ``next_cursor`` is set (docs/api.md, "Pagination")."""

    items: list[T]
    next_cursor: Optional[str]


class Paginator(Generic[T]):
    """Every item of a list route, fetched page by page as it is iterated.

    ``for task in client.iter_tasks(state="dead"): ...`` walks the items;
    ``for page in paginator.pages(): ...`` walks the pages (each a
    :class:`Page`, with its ``next_cursor`` to resume later).
    """

    def __init__(self, fetch: Callable[[Optional[str]], Page[T]], cursor: Optional[str] = None) -> None:
        self._fetch = fetch
        self._cursor = cursor

    def pages(self) -> Iterator[Page[T]]:
        """Yields pages until the server returns ``next_cursor: null``."""
        cursor = self._cursor
        while True:
            page = self._fetch(cursor)
            yield page
            if page.next_cursor is None or page.next_cursor == cursor:
                return
            cursor = page.next_cursor

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.items
