"""What a worker's handler gets: :class:`TaskContext`, and the per-lease
state behind it (:class:`LeaseRun`): the fencing token, the lost/released
flags and the buffer of events waiting to be reported.

Events are batched: ``ctx.event(...)``, ``ctx.agent_started(...)`` and the
verification helpers append to a buffer that the worker flushes every
``event_flush_interval`` seconds, whenever it holds 100 events (the
server's most per call), before the task is completed or failed, and on
``ctx.flush()``. ``ctx.tool(...)`` is sent at once by default, because the
server answers a tool call with its guardrail verdict: a blocked tool call
raises :class:`~forgeline.GuardrailBlocked` in the handler, so the agent can
stop.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Optional

from .errors import ForgelineError, GuardrailBlocked, InvalidRequest, NotFound, StaleLease
from .models import Lease, ReviewFeedback, Task

if TYPE_CHECKING:
    from .client import Client

__all__ = ["LeaseRun", "TaskContext", "Verification", "WORKER_EVENT_TYPES"]

log = logging.getLogger("forgeline.worker")

#: The event types a worker may report (docs/api.md, "Worker event shapes").
WORKER_EVENT_TYPES = frozenset(
    {"agent_started", "tool_invoked", "agent_finished", "verification_started", "verification_finished"}
)

#: Most events the server accepts in one call.
MAX_EVENTS_PER_CALL = 100

#: Longest string field of a worker event (``output_tail`` excepted).
MAX_EVENT_STRING_BYTES = 512


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LeaseRun:
    """One granted lease while the worker holds it. Internal to the worker;
    the handler sees it through :class:`TaskContext`."""

    def __init__(self, client: Client, lease: Lease, lease_ms: int, heartbeat_interval: float) -> None:
        self.client = client
        self.lease = lease
        self.lease_ms = lease_ms
        self.heartbeat_interval = heartbeat_interval
        now = time.monotonic()
        self.next_heartbeat = now + heartbeat_interval
        self.deadline = now + lease_ms / 1000
        self.lock = threading.Lock()  # guards the flags and the buffer
        self.send_lock = threading.Lock()  # keeps event batches in order
        self.buffer: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.lost: Optional[str] = None  # why the lease was lost
        self.released = False
        self.finishing = False
        self.started = False  # a handler thread runs it

    @property
    def active(self) -> bool:
        """Still ours to heartbeat: not lost, released or finished."""
        return self.lost is None and not self.released and not self.done.is_set()

    def mark_lost(self, reason: str) -> None:
        """Records that the server no longer lets this worker hold the lease."""
        with self.lock:
            if self.lost is not None:
                return
            self.lost = reason
        self.stopping.set()
        log.warning(
            "forgeline: lost the lease %s of task %s: %s; its result will be dropped",
            self.lease.lease_id,
            self.lease.task.id,
            reason,
        )

    def add_event(self, event: dict[str, Any]) -> bool:
        """Buffers an event; True when the buffer is full enough to send."""
        with self.lock:
            self.buffer.append(event)
            return len(self.buffer) >= MAX_EVENTS_PER_CALL

    def flush(
        self,
        extra: Optional[dict[str, Any]] = None,
        *,
        raise_blocked: bool = False,
        even_if_released: bool = False,
    ) -> list[dict[str, Any]]:
        """Sends the buffered events (then ``extra``, alone in its own call);
        returns the guardrail flags the calls raised. Send failures are
        logged and the batch dropped (reporting is at most once), except a
        blocked ``extra`` with ``raise_blocked``, which is raised. Once the
        lease was lost or given back, events are dropped."""
        flags: list[dict[str, Any]] = []
        with self.send_lock:
            with self.lock:
                batch, self.buffer = self.buffer, []
            chunks = [batch[i : i + MAX_EVENTS_PER_CALL] for i in range(0, len(batch), MAX_EVENTS_PER_CALL)]
            if extra is not None:
                chunks.append([extra])
            for i, chunk in enumerate(chunks):
                if self.lost is not None or (self.released and not even_if_released):
                    return flags
                try:
                    ack = self.client.report_events(self.lease.lease_id, self.lease.token, chunk)
                    flags.extend(ack.guardrails)
                except (StaleLease, NotFound) as e:
                    self.mark_lost(str(e))
                    if raise_blocked and extra is not None:
                        raise
                except GuardrailBlocked:
                    if raise_blocked and extra is not None and i == len(chunks) - 1:
                        raise
                    log.warning("forgeline: a guardrail blocked a batch of %d events of task %s", len(chunk), self.lease.task.id)
                except InvalidRequest as e:
                    log.error("forgeline: the server refused %d events of task %s: %s", len(chunk), self.lease.task.id, e)
                    if raise_blocked and extra is not None and i == len(chunks) - 1:
                        raise
                except ForgelineError as e:
                    log.warning("forgeline: could not report %d events of task %s: %s", len(chunk), self.lease.task.id, e)
        return flags


class Verification:
    """What ``with ctx.verification(step) as v:`` yields: set ``exit_code``,
    ``outcome`` (``passed``, ``failed``, ``timed_out``, ``error``), ``output``
    (its tail is kept) or ``error`` before the block ends. Left unset, the
    outcome is ``passed``, or ``error`` when the block raised."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.exit_code: Optional[int] = None
        self.outcome: Optional[str] = None
        self.output: Optional[str] = None
        self.error: Optional[str] = None
        self.duration_ms: Optional[int] = None

    def fail(self, error: Optional[str] = None, *, exit_code: Optional[int] = None) -> None:
        """Marks the step failed (without raising)."""
        self.outcome = "failed"
        if error is not None:
            self.error = error
        if exit_code is not None:
            self.exit_code = exit_code


class TaskContext:
    """What a handler gets for one leased task.

    Attributes:
        lease: The lease (id, fencing token, deadline, run, attempt).
        worker_id: The worker's id.
        stopping: Set when the worker is shutting down or the lease was lost
            (the task was cancelled, or redelivered after the lease
            expired). A long handler should check it and return early: its
            result will not be stored anyway once the lease is lost.
    """

    def __init__(self, run: LeaseRun, worker_id: str) -> None:
        self._run = run
        self.lease = run.lease
        self.worker_id = worker_id
        self.stopping = run.stopping

    # -- what the task is --------------------------------------------------

    @property
    def task(self) -> Task:
        """The task as it was leased."""
        return self.lease.task

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self.lease.task.id

    @property
    def payload(self) -> Any:
        """The task's payload."""
        return self.lease.task.payload

    @property
    def attempt(self) -> int:
        """This run's attempt number (1-based)."""
        return self.lease.attempt

    @property
    def steps(self) -> list[Any]:
        """The task's steps."""
        return self.lease.steps

    @property
    def review_feedback(self) -> Optional[ReviewFeedback]:
        """The reviewer's ``changes_requested`` comment, on a rerun after one."""
        return self.lease.review_feedback

    @property
    def lease_lost(self) -> bool:
        """True once the server refused this lease (its result will be dropped)."""
        return self._run.lost is not None

    # -- reporting ---------------------------------------------------------

    def event(self, type: str, **fields: Any) -> None:
        """Buffers one worker event: ``type`` is one of ``agent_started``,
        ``tool_invoked``, ``agent_finished``, ``verification_started``,
        ``verification_finished``; ``fields`` are its fields (docs/api.md,
        "Worker event shapes"); unknown ones are kept as attributes. A
        ``timestamp`` (now) is added unless given."""
        if type not in WORKER_EVENT_TYPES:
            raise ValueError(f"unknown worker event type {type!r}; expected one of {sorted(WORKER_EVENT_TYPES)}")
        event: dict[str, Any] = {"type": type}
        event.update({k: v for k, v in fields.items() if v is not None})
        event.setdefault("timestamp", now_rfc3339())
        if self._run.add_event(event):
            self._run.flush()

    def agent_started(self, name: str, **attributes: Any) -> None:
        """Reports that agent ``name`` started (``model=...`` and other
        attributes are kept)."""
        self.event("agent_started", agent_name=name, **attributes)

    def agent_finished(self, name: str, outcome: Optional[str] = "ok", **attributes: Any) -> None:
        """Reports that agent ``name`` finished with ``outcome``."""
        self.event("agent_finished", agent_name=name, outcome=outcome, **attributes)

    @contextmanager
    def agent(self, name: str, **attributes: Any) -> Iterator[None]:
        """Reports ``agent_started`` now and ``agent_finished`` when the block
        ends (outcome ``ok``, or ``error`` with the exception's text)."""
        self.agent_started(name, **attributes)
        try:
            yield
        except BaseException as e:
            self.agent_finished(name, "error", error=_short(e))
            raise
        self.agent_finished(name, "ok")

    def tool(
        self,
        name: str,
        *,
        agent: Optional[str] = None,
        call_id: Optional[str] = None,
        duration_ms: Optional[int] = None,
        error: Optional[str] = None,
        wait: bool = True,
        **attributes: Any,
    ) -> list[dict[str, Any]]:
        """Reports a tool call. With ``wait`` (the default) it is sent at once
        (after any buffered events) and the tool-stage guardrail flags are
        returned; a blocking policy raises :class:`~forgeline.GuardrailBlocked`
        (stop the agent). With ``wait=False`` it is buffered like other
        events and ``[]`` is returned."""
        event: dict[str, Any] = {"type": "tool_invoked", "tool_name": name, "timestamp": now_rfc3339()}
        for key, value in (("agent_name", agent), ("tool_call_id", call_id), ("duration_ms", duration_ms)):
            if value is not None:
                event[key] = value
        if error is not None:
            event["error"] = truncate_utf8(error, MAX_EVENT_STRING_BYTES)
        event.update({k: v for k, v in attributes.items() if v is not None})
        if not wait:
            if self._run.add_event(event):
                self._run.flush()
            return []
        return self._run.flush(event, raise_blocked=True)

    @contextmanager
    def verification(self, step: str) -> Iterator[Verification]:
        """Measures a verification step: reports ``verification_started`` now
        and ``verification_finished`` when the block ends, with the measured
        ``duration_ms``, the outcome and exit code set on the yielded
        :class:`Verification` (``passed`` by default, ``error`` when the block
        raised; the exception propagates)::

            with ctx.verification("build") as v:
                proc = subprocess.run(["make"], capture_output=True, text=True)
                v.exit_code, v.output = proc.returncode, proc.stdout
        """
        v = Verification(step)
        self.event("verification_started", step=step)
        started = time.monotonic()
        try:
            yield v
        except BaseException as e:
            v.duration_ms = int((time.monotonic() - started) * 1000)
            if v.outcome is None:
                v.outcome = "failed" if v.exit_code not in (None, 0) else "error"
            self._finish_verification(v, error=v.error or _short(e))
            raise
        v.duration_ms = int((time.monotonic() - started) * 1000)
        if v.outcome is None:
            v.outcome = "passed" if v.exit_code in (None, 0) else "failed"
        self._finish_verification(v, error=v.error)

    def _finish_verification(self, v: Verification, *, error: Optional[str]) -> None:
        self.event(
            "verification_finished",
            step=v.step,
            outcome=v.outcome,
            exit_code=v.exit_code,
            duration_ms=v.duration_ms,
            output_tail=v.output,
            error=None if error is None else truncate_utf8(error, MAX_EVENT_STRING_BYTES),
        )

    def flush(self) -> list[dict[str, Any]]:
        """Sends the buffered events now; returns the guardrail flags raised."""
        return self._run.flush()


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, on a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return truncate_utf8(text, MAX_EVENT_STRING_BYTES)
