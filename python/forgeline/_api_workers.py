"""The worker protocol (lease, heartbeat, events, complete, fail, release),
worker records and the dead-letter queue."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from ._api_base import APIBase, seg
from .models import EventsAck, Lease, LeaseResult, Page, Paginator, Task, WorkerInfo

__all__ = ["WorkerProtocolAPI"]

# Extra seconds a long-poll lease request may take beyond its wait_ms.
_LONG_POLL_MARGIN = 10.0


class WorkerProtocolAPI(APIBase):
    """The worker-protocol and dead-letter routes of :class:`~forgeline.Client`.
    Most programs use :class:`~forgeline.Worker` rather than these."""

    def lease(
        self,
        queue: str,
        worker_id: str,
        *,
        max: int = 1,
        wait_ms: int = 0,
        lease_ms: Optional[int] = None,
    ) -> list[Lease]:
        """Leases up to ``max`` tasks from ``queue`` (``POST /queues/{q}/lease``),
        waiting up to ``wait_ms`` for the first one. Returns ``[]`` when none
        became ready in time. Most callers want :class:`~forgeline.Worker`."""
        body: dict[str, Any] = {"worker_id": worker_id, "max": max, "wait_ms": wait_ms}
        if lease_ms is not None:
            body["lease_ms"] = lease_ms
        data = self._core.json(
            "POST",
            f"/api/v1/queues/{seg(queue)}/lease",
            body=body,
            idempotent=False,
            timeout=self._core.timeout + wait_ms / 1000 + _LONG_POLL_MARGIN,
        )
        return [Lease.from_json(grant) for grant in data.get("leases", [])]

    def heartbeat(self, lease_id: str, token: int, *, lease_ms: Optional[int] = None) -> str:
        """Extends a lease to now + ``lease_ms`` (``POST /leases/{id}/heartbeat``);
        returns the new deadline (RFC 3339).

        Raises:
            StaleLease: the lease ended or expired, or the token is not its own.
        """
        body: dict[str, Any] = {"token": token}
        if lease_ms is not None:
            body["lease_ms"] = lease_ms
        data = self._core.json("POST", f"/api/v1/leases/{seg(lease_id)}/heartbeat", body=body, idempotent=True)
        return str(data.get("deadline", ""))

    def report_events(self, lease_id: str, token: int, events: Sequence[Mapping[str, Any]]) -> EventsAck:
        """Reports 1-100 agent, tool and verification events for a lease's run
        (``POST /leases/{id}/events``); all or nothing.

        Raises:
            InvalidRequest: an event does not fit (``.field`` names it).
            GuardrailBlocked: a tool call was blocked; nothing was stored.
            StaleLease: the lease is gone.
        """
        body = {"token": token, "events": [dict(e) for e in events]}
        data = self._core.json("POST", f"/api/v1/leases/{seg(lease_id)}/events", body=body, idempotent=False)
        return EventsAck(
            accepted=int(data.get("accepted", 0)),
            event_ids=[str(i) for i in data.get("event_ids", [])],
            guardrails=[dict(g) for g in data.get("guardrails", [])],
        )

    def complete(self, lease_id: str, token: int, result: Any = None) -> Task:
        """Completes a leased task with ``result`` (``POST /leases/{id}/complete``).
        The task becomes ``completed``, or ``awaiting_review``.

        Raises:
            StaleLease: the lease was lost; the result was not stored.
            GuardrailBlocked: an output guardrail blocked it; the task failed.
            PayloadTooLarge: the result is over ``tasks.max_payload_bytes``.
        """
        body = {"token": token, "result": result}
        data = self._core.json("POST", f"/api/v1/leases/{seg(lease_id)}/complete", body=body, idempotent=False)
        return Task.from_json(data)

    def fail(self, lease_id: str, token: int, error: str, *, retryable: bool = True) -> Task:
        """Gives up on a leased task (``POST /leases/{id}/fail``). Retryable:
        the task is retried after a backoff, or dead-lettered when out of
        attempts; else it fails for good. ``error`` is 1-4096 bytes."""
        body = {"token": token, "error": error, "retryable": retryable}
        data = self._core.json("POST", f"/api/v1/leases/{seg(lease_id)}/fail", body=body, idempotent=False)
        return Task.from_json(data)

    def complete_many(self, items: Sequence[tuple[str, int, Any]]) -> list[LeaseResult]:
        """Completes up to 100 leases in one call (``POST /leases/complete``):
        ``items`` are ``(lease_id, token, result)``. Each item is checked and
        stored on its own and answered in a :class:`LeaseResult` (in order);
        one item's refusal (a lost lease: ``status`` 409, ``stale_lease``)
        does not undo the others. One commit round covers the whole call.

        Raises:
            InvalidRequest: no items, more than 100, or a malformed item.
        """
        body = {"items": [{"lease_id": lid, "token": tok, "result": res} for lid, tok, res in items]}
        data = self._core.json("POST", "/api/v1/leases/complete", body=body, idempotent=False)
        return [LeaseResult.from_json(r) for r in data.get("results") or []]

    def fail_many(self, items: Sequence[tuple[str, int, str, bool]]) -> list[LeaseResult]:
        """Fails up to 100 leases in one call (``POST /leases/fail``): ``items``
        are ``(lease_id, token, error, retryable)``; answered as
        :meth:`complete_many` is. An empty or over-4096-byte ``error``
        refuses the whole call (:class:`InvalidRequest`) before anything is
        written."""
        body = {
            "items": [
                {"lease_id": lid, "token": tok, "error": err, "retryable": retry}
                for lid, tok, err, retry in items
            ]
        }
        data = self._core.json("POST", "/api/v1/leases/fail", body=body, idempotent=False)
        return [LeaseResult.from_json(r) for r in data.get("results") or []]

    def release_lease(self, lease_id: str, token: int) -> Task:
        """Gives a lease back without counting the attempt, so the task is
        queued and leasable again at once (``POST /leases/{id}/release``):
        what :class:`~forgeline.Worker` does with the leases it still holds
        when it stops."""
        body = {"token": token}
        data = self._core.json("POST", f"/api/v1/leases/{seg(lease_id)}/release", body=body, idempotent=False)
        return Task.from_json(data)

    def report_worker_status(
        self,
        worker_id: str,
        status: str,
        *,
        current_task: Optional[str] = None,
        detail: Optional[str] = None,
    ) -> WorkerInfo:
        """Replaces a worker's record (``POST /workers/{id}/status``): ``status``
        is ``idle``, ``busy``, ``draining`` or ``offline``."""
        body: dict[str, Any] = {"status": status}
        if current_task is not None:
            body["current_task"] = current_task
        if detail is not None:
            body["detail"] = detail
        data = self._core.json("POST", f"/api/v1/workers/{seg(worker_id)}/status", body=body, idempotent=True)
        return WorkerInfo.from_json(data)

    def list_workers(self) -> list[WorkerInfo]:
        """The workers the server knows of, sorted by id (``GET /workers``)."""
        data = self._core.json("GET", "/api/v1/workers", idempotent=True)
        return [WorkerInfo.from_json(w) for w in data.get("workers", [])]

    # -- dead-letter -------------------------------------------------------

    def list_dead_letter(
        self,
        *,
        queue: Optional[str] = None,
        cursor: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Page[Task]:
        """One page of dead-lettered tasks, newest first (``GET /dead-letter``,
        review_admin)."""
        params = {"queue": queue, "cursor": cursor, "limit": limit}
        data = self._core.json("GET", "/api/v1/dead-letter", params=params, idempotent=True)
        return Page([Task.from_json(t) for t in data.get("tasks", [])], data.get("next_cursor"))

    def iter_dead_letter(
        self,
        *,
        queue: Optional[str] = None,
        cursor: Optional[str] = None,
        page_size: Optional[int] = None,
    ) -> Paginator[Task]:
        """Every dead-lettered task, page by page as it is iterated."""
        return Paginator(lambda c: self.list_dead_letter(queue=queue, cursor=c, limit=page_size), cursor)

    def requeue(self, task_id: str) -> Task:
        """Puts a dead task back on its queue with a fresh attempt budget
        (``POST /dead-letter/{id}/requeue``, review_admin).

        Raises:
            NotDead: the task is not dead.
        """
        data = self._core.json("POST", f"/api/v1/dead-letter/{seg(task_id)}/requeue", idempotent=False)
        return Task.from_json(data)
