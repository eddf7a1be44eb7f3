"""``forgeline.Worker``: leases tasks from a queue and runs a handler for
each in its own thread, with heartbeats, fencing and clean shutdown.

The rules (docs/sdk-python.md, "Worker rules"):

* It leases up to its free slots per request (``max`` = free slots), with a
  long-poll of ``poll_wait_ms``.
* Every held lease is extended by a heartbeat every ``heartbeat_interval``
  seconds (default: a third of ``lease_ms``). Every call on a lease sends
  its fencing token.
* The handler's return value is the task's result (``/complete``). An
  exception fails the attempt (``/fail``) with ``"<Type>: <message>"``:
  retryable when the exception's ``retryable`` attribute says so
  (:class:`Retry` yes, :class:`Fatal` no, :class:`~forgeline.GuardrailBlocked`
  no), else per ``default_retryable`` (True: plain exceptions are retried
  with the server's backoff and dead-lettered after ``max_attempts``).
* When a heartbeat, event report, complete or fail answers 409
  ``stale_lease`` (or 404 for the lease), the lease is lost: the task was
  cancelled, or it expired and may be running elsewhere. The worker sets
  ``ctx.stopping``, drops the handler's result, never retries the call, and
  logs a warning.
* A complete or fail whose answer was lost (503, connection reset) is not
  blindly resent: the worker reads the task and resends only while its
  lease still holds the task.
* :meth:`Worker.stop` (or SIGTERM/SIGINT under :meth:`Worker.run`) stops
  leasing, sets ``ctx.stopping``, waits up to ``shutdown_grace`` seconds
  for running handlers, then gives the remaining leases back and returns.
  A handler still running after that keeps its thread (a daemon thread, so
  the process can exit) but its result is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Optional

from .client import Client
from .context import LeaseRun, TaskContext, truncate_utf8
from .errors import (
    Forbidden,
    ForgelineError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    StaleLease,
    TransportError,
    Unauthorized,
    Unavailable,
)
from .models import Lease

__all__ = ["Fatal", "Handler", "Retry", "Worker", "WorkerStats"]

log = logging.getLogger("forgeline.worker")

#: A handler: takes the task's context, returns its (JSON) result.
Handler = Callable[[TaskContext], Any]

#: Longest ``error`` a ``/fail`` takes.
MAX_ERROR_BYTES = 4096

class Retry(Exception):
    """Raise in a handler to fail this attempt *retryably*: the server
    schedules a retry with backoff, or dead-letters the task once it has
    used ``max_attempts``."""

    retryable = True


class Fatal(Exception):
    """Raise in a handler to fail the task for good (no retry)."""

    retryable = False


@dataclass
class WorkerStats:
    """Counters of what a worker did since it was created."""

    leased: int = 0
    completed: int = 0
    failed: int = 0
    lease_lost: int = 0
    released: int = 0


class Worker:
    """Runs ``handler`` for the tasks of ``queue``.

    Args:
        client: The client (its token needs the ``worker`` role).
        queue: The queue to lease from.
        handler: ``handler(ctx) -> result``; or set it with the
            :meth:`handler` decorator.
        concurrency: Tasks run at once, each in its own thread.
        worker_id: The id shown in ``GET /workers`` (default
            ``<host>-<pid>-<random>``).
        lease_ms: Lease length asked for (server bounds: ``queue.min_lease``
            to ``queue.max_lease``).
        poll_wait_ms: Long-poll of each lease request (at most
            ``queue.max_wait``, 30 s). Also bounds how long :meth:`stop`
            waits for an in-flight poll.
        heartbeat_interval: Seconds between heartbeats of a lease (default
            a third of ``lease_ms``).
        event_flush_interval: Seconds between flushes of buffered events.
        shutdown_grace: Seconds :meth:`stop` lets running handlers finish
            before their leases are given back.
        default_retryable: Whether an exception without a ``retryable``
            attribute fails the attempt retryably.
        report_status: Report ``idle`` when starting and ``offline`` when
            stopped (``POST /workers/{id}/status``).
    """

    def __init__(
        self,
        client: Client,
        queue: str,
        handler: Optional[Handler] = None,
        *,
        concurrency: int = 1,
        worker_id: Optional[str] = None,
        lease_ms: int = 30_000,
        poll_wait_ms: int = 5_000,
        heartbeat_interval: Optional[float] = None,
        event_flush_interval: float = 0.5,
        shutdown_grace: float = 0.0,
        default_retryable: bool = True,
        report_status: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.queue = queue
        self._handler = handler
        self.concurrency = concurrency
        self.worker_id = worker_id or default_worker_id()
        self.lease_ms = lease_ms
        self.poll_wait_ms = poll_wait_ms
        self.heartbeat_interval = heartbeat_interval if heartbeat_interval is not None else lease_ms / 3000
        self.event_flush_interval = event_flush_interval
        self.shutdown_grace = shutdown_grace
        self.default_retryable = default_retryable
        self.report_status = report_status
        self.stats = WorkerStats()
        self._stats_lock = threading.Lock()
        self._runs: dict[str, LeaseRun] = {}
        self._changed = threading.Condition()  # guards _runs; notified when a run ends
        self._stop = threading.Event()
        self._force = threading.Event()
        self._background_stop = threading.Event()
        self._running = False

    # -- public API ----------------------------------------------------------

    def handler(self, fn: Handler) -> Handler:
        """Decorator form: ``@worker.handler`` sets the handler and returns it."""
        self._handler = fn
        return fn

    @property
    def running(self) -> bool:
        """True while :meth:`run` is running."""
        return self._running

    def active_leases(self) -> list[Lease]:
        """The leases this worker holds now."""
        with self._changed:
            return [r.lease for r in self._runs.values()]

    def stop(self, grace: Optional[float] = None) -> None:
        """Asks :meth:`run` to stop (from any thread or a signal handler):
        leasing stops, ``ctx.stopping`` is set, running handlers get
        ``grace`` seconds (default ``shutdown_grace``), then their leases
        are given back. Returns at once; ``run`` returns when done."""
        if grace is not None:
            self.shutdown_grace = grace
        self._stop.set()
        with self._changed:
            for run in self._runs.values():
                run.stopping.set()
            self._changed.notify_all()

    def run(self, *, install_signal_handlers: bool = True, burst: bool = False) -> None:
        """Leases and handles tasks until :meth:`stop` is called (or, with
        ``burst``, until a poll finds nothing and no task is running).

        With ``install_signal_handlers`` (and when called from the main
        thread), SIGTERM and SIGINT call :meth:`stop`; a second signal skips
        the grace period. The previous handlers are restored on return.

        Raises:
            Unauthorized, Forbidden, InvalidRequest, NotFound: leasing was
                refused (a bad token, a missing role, a bad queue name), after
                the held leases were given back.
        """
        if self._handler is None:
            raise ValueError("no handler: pass handler= or decorate one with @worker.handler")
        if self._running:
            raise RuntimeError("this worker is already running")
        self._running = True
        self._background_stop.clear()
        previous = self._install_signals() if install_signal_handlers else {}
        threads = [
            threading.Thread(target=self._heartbeat_loop, name=f"forgeline-heartbeat-{self.worker_id}", daemon=True),
            threading.Thread(target=self._flush_loop, name=f"forgeline-events-{self.worker_id}", daemon=True),
        ]
        for t in threads:
            t.start()
        self._report("idle")
        fatal: Optional[ForgelineError] = None
        try:
            fatal = self._poll_loop(burst)
        finally:
            self._shutdown()
            self._background_stop.set()
            for t in threads:
                t.join(timeout=self.client.timeout + 5)
            self._report("offline")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # Cleared only now: a stop() before run() makes run() return at once.
            self._stop.clear()
            self._force.clear()
            self._running = False
        if fatal is not None:
            raise fatal

    # -- leasing -------------------------------------------------------------

    def _poll_loop(self, burst: bool) -> Optional[ForgelineError]:
        failures = 0
        while not self._stop.is_set():
            with self._changed:
                free = self.concurrency - len(self._runs)
                if free <= 0:
                    self._changed.wait(timeout=1.0)
                    continue
            try:
                leases = self.client.lease(
                    self.queue,
                    self.worker_id,
                    max=free,
                    wait_ms=0 if burst else self.poll_wait_ms,
                    lease_ms=self.lease_ms,
                )
            except (Unauthorized, Forbidden, InvalidRequest, NotFound) as e:
                log.error("forgeline: worker %s cannot lease from %s: %s", self.worker_id, self.queue, e)
                return e
            except ForgelineError as e:
                failures += 1
                delay = min(10.0, 0.5 * 2 ** min(failures, 5)) * random.uniform(0.5, 1.0)
                log.warning("forgeline: leasing from %s failed (%s); retrying in %.1fs", self.queue, e, delay)
                self._stop.wait(delay)
                continue
            failures = 0
            for lease in leases:
                self._start(lease)
            if burst and not leases:
                with self._changed:
                    if not self._runs:
                        return None
                    self._changed.wait(timeout=1.0)
        return None

    def _start(self, lease: Lease) -> None:
        run = LeaseRun(self.client, lease, self.lease_ms, self.heartbeat_interval)
        self._count("leased")
        with self._changed:
            self._runs[lease.lease_id] = run
            if self._stop.is_set():
                run.stopping.set()
                return  # leased while stopping: given back by _shutdown
            run.started = True
        thread = threading.Thread(
            target=self._execute, args=(run,), name=f"forgeline-task-{lease.task.id}", daemon=True
        )
        thread.start()

    # -- one task ------------------------------------------------------------

    def _execute(self, run: LeaseRun) -> None:
        ctx = TaskContext(run, self.worker_id)
        handler = self._handler
        assert handler is not None
        try:
            try:
                result = handler(ctx)
            except BaseException as exc:  # noqa: BLE001 - every failure is reported to the server
                self._fail(run, exc)
            else:
                self._complete(run, result)
        except BaseException:  # noqa: BLE001 - a worker thread must never die silently
            log.exception("forgeline: unexpected error finishing task %s", run.lease.task.id)
        finally:
            run.done.set()
            with self._changed:
                self._runs.pop(run.lease.lease_id, None)
                self._changed.notify_all()

    def _claim_finish(self, run: LeaseRun) -> bool:
        """True when this worker may still finish the run (not lost or released)."""
        with run.lock:
            if run.lost is None and not run.released:
                run.finishing = True
                return True
            why = f"the lease was lost ({run.lost})" if run.lost else "the lease was given back at shutdown"
        log.warning("forgeline: dropping the result of task %s: %s", run.lease.task.id, why)
        if run.lost:
            self._count("lease_lost")
        return False

    def _complete(self, run: LeaseRun, result: Any) -> None:
        if not self._claim_finish(run):
            return
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as e:
            self._send_fail(run, f"the handler's result is not JSON: {e}", retryable=False)
            return
        run.flush()
        if not self._claim_finish(run):
            return
        try:
            self._finish_call(run, "complete", lambda: self.client.complete(run.lease.lease_id, run.lease.token, result))
        except (PayloadTooLarge, InvalidRequest) as e:
            # The server refused the result but the lease holds: fail for good
            # (a guardrail block already failed the task server-side).
            if e.code != "guardrail_blocked":
                self._send_fail(run, f"the server refused the result: {e.message}", retryable=False)
            else:
                log.warning("forgeline: an output guardrail blocked the result of task %s: %s", run.lease.task.id, e)
                self._count("failed")

    def _fail(self, run: LeaseRun, exc: BaseException) -> None:
        if not self._claim_finish(run):
            return
        retryable = getattr(exc, "retryable", None)
        if not isinstance(retryable, bool):
            retryable = self.default_retryable
        if isinstance(exc, (Retry, Fatal)) and str(exc):
            text = str(exc)
        else:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning(
            "forgeline: task %s (attempt %d) failed (%s): %s",
            run.lease.task.id,
            run.lease.attempt,
            "retryable" if retryable else "final",
            text,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        run.flush()
        self._send_fail(run, text, retryable=retryable)

    def _send_fail(self, run: LeaseRun, error: str, *, retryable: bool) -> None:
        if run.lost is not None:
            self._count("lease_lost")
            return
        error = truncate_utf8(error, MAX_ERROR_BYTES) or "failed"
        try:
            self._finish_call(
                run, "fail", lambda: self.client.fail(run.lease.lease_id, run.lease.token, error, retryable=retryable)
            )
        except ForgelineError as e:
            log.error("forgeline: could not fail task %s: %s", run.lease.task.id, e)

    def _finish_call(self, run: LeaseRun, what: str, call: Callable[[], Any]) -> None:
        """Sends a complete or fail; never resends after a stale lease; after
        an ambiguous failure resends only while the lease still holds the task."""
        attempts = 0
        while True:
            try:
                call()
            except (StaleLease, NotFound) as e:
                run.mark_lost(str(e))
                log.warning("forgeline: the server refused to %s task %s (lease lost); not retried", what, run.lease.task.id)
                self._count("lease_lost")
                return
            except (Unavailable, TransportError) as e:
                attempts += 1
                state = self._lease_state(run)
                if state == "held" and attempts <= 5:
                    log.warning("forgeline: %s of task %s failed (%s); the lease still holds, resending", what, run.lease.task.id, e)
                    time.sleep(min(5.0, 0.2 * 2**attempts))
                    continue
                if state == "applied":
                    break
                if state == "lost":
                    run.mark_lost(f"{what} failed ({e}) and the lease no longer holds the task")
                    self._count("lease_lost")
                    return
                raise
            break
        self._count("completed" if what == "complete" else "failed")

    def _lease_state(self, run: LeaseRun) -> str:
        """After an ambiguous complete/fail: ``held`` (resend), ``applied``
        (it went through) or ``lost``; ``unknown`` when the task is unreadable."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                task = self.client.get_task(run.lease.task.id, events=0)
            except ForgelineError:
                time.sleep(1.0)
                continue
            if task.lease_id == run.lease.lease_id and task.state in ("running", "verifying"):
                return "held"
            for r in task.runs:
                if r.get("lease_id") == run.lease.lease_id:
                    return "applied" if r.get("outcome") in ("completed", "failed", "retried") else "lost"
            return "lost"
        return "unknown"

    # -- background loops ----------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._background_stop.is_set():
            now = time.monotonic()
            with self._changed:
                runs = [r for r in self._runs.values() if r.active]
            next_due = now + 1.0
            for run in runs:
                if run.next_heartbeat <= now:
                    self._heartbeat(run)
                next_due = min(next_due, run.next_heartbeat)
            self._background_stop.wait(max(0.01, min(1.0, next_due - time.monotonic())))

    def _heartbeat(self, run: LeaseRun) -> None:
        started = time.monotonic()
        try:
            self.client.heartbeat(run.lease.lease_id, run.lease.token, lease_ms=run.lease_ms)
        except (StaleLease, NotFound) as e:
            if run.finishing:
                return  # raced with our own complete/fail, which settles the outcome
            run.mark_lost(str(e))
        except ForgelineError as e:
            log.warning("forgeline: heartbeat of task %s failed: %s", run.lease.task.id, e)
            run.next_heartbeat = time.monotonic() + min(1.0, run.heartbeat_interval / 2)
        else:
            run.deadline = started + run.lease_ms / 1000
            run.next_heartbeat = started + run.heartbeat_interval

    def _flush_loop(self) -> None:
        while not self._background_stop.wait(self.event_flush_interval):
            with self._changed:
                runs = [r for r in self._runs.values() if r.active and r.buffer]
            for run in runs:
                run.flush()

    # -- shutdown ------------------------------------------------------------

    def _shutdown(self) -> None:
        self.stop()
        if self.report_status:
            self._report("draining")
        deadline = time.monotonic() + self.shutdown_grace
        with self._changed:
            while any(r.started for r in self._runs.values()) and not self._force.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(timeout=min(left, 0.5))
            runs = list(self._runs.values())
        for run in runs:
            with run.lock:
                if run.finishing or run.lost is not None:
                    continue
                run.released = True
            self._release(run)
        # Let completions already on the wire finish before returning.
        for run in runs:
            if run.finishing:
                run.done.wait(timeout=self.client.timeout * 2)

    def _release(self, run: LeaseRun) -> None:
        run.flush(even_if_released=True)
        lease = run.lease
        try:
            self.client.release_lease(lease.lease_id, lease.token)
            log.info("forgeline: gave back the lease of task %s", lease.task.id)
            self._count("released")
        except (StaleLease, NotFound) as e:
            log.info("forgeline: the lease of task %s had already ended: %s", lease.task.id, e)
        except ForgelineError as e:
            log.error("forgeline: could not give back the lease of task %s: %s", lease.task.id, e)

    # -- helpers -------------------------------------------------------------

    def _count(self, what: str) -> None:
        with self._stats_lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)

    def _report(self, status: str) -> None:
        if not self.report_status:
            return
        try:
            self.client.report_worker_status(self.worker_id, status, detail=f"queue {self.queue}")
        except ForgelineError as e:
            log.debug("forgeline: status report %s failed: %s", status, e)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if self._stop.is_set():
            log.warning("forgeline: second signal %d: giving the leases back now", signum)
            self._force.set()
            with self._changed:
                self._changed.notify_all()
            return
        log.info("forgeline: signal %d: worker %s stopping", signum, self.worker_id)
        self.stop()


def default_worker_id() -> str:
    """``<host>-<pid>-<6 hex>``, kept to the characters a worker id allows."""
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname()) or "worker"
    if not host[0].isalnum():
        host = "w" + host
    return f"{host[:100]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
