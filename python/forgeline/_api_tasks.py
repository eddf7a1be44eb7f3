"""Tasks: submit (and submit-and-follow), read, list, cancel, runs, dossiers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence, Union

import httpx

from ._api_base import APIBase, bounds, rfc3339, seg, stream_timeout, with_max
from ._http import encode_json
from .models import Page, Paginator, Task
from .stream import EventStream, Seconds, duration_param, to_seconds

__all__ = ["TasksAPI"]


class TasksAPI(APIBase):
    """The task routes of :class:`~forgeline.Client` (docs/api.md, "Tasks")."""

    def submit(
        self,
        payload: Any = None,
        *,
        queue: Optional[str] = None,
        priority: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
        steps: Optional[Sequence[Union[str, Mapping[str, Any]]]] = None,
        max_attempts: Optional[int] = None,
        delay: Optional[Union[Seconds, str]] = None,
        run_at: Optional[Union[datetime, str]] = None,
        review: Optional[bool] = None,
        required_approvals: Optional[int] = None,
        workdir: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        traceparent: Optional[str] = None,
    ) -> Task:
        """Submits a task (``POST /api/v1/tasks``) and returns it once durable.

        Args:
            payload: Any JSON value, handed to the worker.
            queue: The queue (server default ``default``).
            priority: 0-9; 9 is leased first (server default 5).
            labels: String labels (filterable with :meth:`list_tasks`).
            steps: Step names, or ``{"name", "argv"}`` inline commands.
            max_attempts: Leases before the task is dead-lettered.
            delay: Not leased before this long from now: seconds, a
                ``timedelta``, or a humantime string (``"90s"``).
            run_at: Not leased before this time (an aware ``datetime`` or
                an RFC 3339 string). Give ``delay`` or ``run_at``, not both.
            review: Hold each completion for human review.
            required_approvals: Approvals needed (N of M); implies review.
            workdir: The executor's directory for the task (relative).
            idempotency_key: Makes the submit idempotent: the same key and
                body return the first task (even after it ended). Without
                one, a key is generated when ``auto_idempotency_key`` is on.
            traceparent: A W3C trace context to parent the task's trace on.

        Raises:
            InvalidRequest: a field is out of range (``.field`` names it).
            GuardrailBlocked: an input-stage guardrail blocked it.
            IdempotencyKeyReused: the key was used with a different body.
        """
        body = self._submit_body(
            payload, queue, priority, labels, steps, max_attempts, delay, run_at, review,
            required_approvals, workdir,
        )
        headers, idempotent = self._submit_headers(idempotency_key, traceparent)
        data = self._core.json("POST", "/api/v1/tasks", body=body, headers=headers, idempotent=idempotent)
        return Task.from_json(data)

    def submit_and_follow(
        self,
        payload: Any = None,
        *,
        queue: Optional[str] = None,
        priority: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
        steps: Optional[Sequence[Union[str, Mapping[str, Any]]]] = None,
        max_attempts: Optional[int] = None,
        delay: Optional[Union[Seconds, str]] = None,
        run_at: Optional[Union[datetime, str]] = None,
        review: Optional[bool] = None,
        required_approvals: Optional[int] = None,
        workdir: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        traceparent: Optional[str] = None,
        max_events: Optional[int] = None,
        idle_timeout: Optional[Seconds] = None,
        max_reconnects: int = 5,
        read_timeout: float = 60.0,
    ) -> EventStream:
        """Submits a task and follows its events to its end in one request
        (``POST /api/v1/tasks/stream``). Arguments as :meth:`submit` and
        :meth:`events`; ``stream.task_id`` holds the new task's id once the
        first event arrived. A dropped stream resumes on
        ``GET /tasks/{id}/events`` after the last event seen."""
        body = self._submit_body(
            payload, queue, priority, labels, steps, max_attempts, delay, run_at, review,
            required_approvals, workdir,
        )
        headers, idempotent = self._submit_headers(idempotency_key, traceparent)
        headers["Accept"] = "text/event-stream"
        params = bounds(None, idle_timeout)
        holder: dict[str, Optional[str]] = {"task_id": None}

        def opener(last_event_id: Optional[str], remaining: Optional[int]) -> httpx.Response:
            if holder["task_id"] is not None:
                return self._open_stream(
                    f"/api/v1/tasks/{holder['task_id']}/events", last_event_id, remaining,
                    params, read_timeout,
                )
            request = self._core.http.build_request(
                "POST",
                "/api/v1/tasks/stream",
                content=encode_json(body),
                params=with_max(params, remaining),
                headers={**headers, "Content-Type": "application/json"},
                timeout=stream_timeout(self._core.timeout, read_timeout),
            )
            response = self._core.send(request, idempotent=idempotent, stream=True)
            holder["task_id"] = response.headers.get("x-task-id")
            return response

        return EventStream(
            self._core,
            opener,
            last_event_id=None,
            task_id=None,
            max_events=max_events,
            idle_timeout=None if idle_timeout is None else to_seconds(idle_timeout),
            max_reconnects=max_reconnects,
            reconnect_delay=self._core.retry.backoff_base,
        )

    def get_task(self, task_id: str, *, events: Optional[int] = None) -> Task:
        """Reads one task in full (``GET /api/v1/tasks/{id}``), with its runs,
        its last ``events`` events (server default 20, at most 1000), its
        guardrail decisions and review tickets.

        Raises:
            NotFound: no such task.
        """
        data = self._core.json("GET", f"/api/v1/tasks/{seg(task_id)}", params={"events": events}, idempotent=True)
        return Task.from_json(data)

    def list_tasks(
        self,
        *,
        state: Optional[str] = None,
        queue: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        cursor: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Page[Task]:
        """One page of tasks, newest first (``GET /api/v1/tasks``), in
        summary form. ``labels`` must all match. Pass ``page.next_cursor``
        as ``cursor`` for the next page, or use :meth:`iter_tasks`."""
        params: list[tuple[str, Any]] = [("state", state), ("queue", queue)]
        params += [("label", f"{k}:{v}") for k, v in (labels or {}).items()]
        params += [("cursor", cursor), ("limit", limit)]
        data = self._core.json("GET", "/api/v1/tasks", params=params, idempotent=True)
        return Page([Task.from_json(t) for t in data.get("tasks", [])], data.get("next_cursor"))

    def iter_tasks(
        self,
        *,
        state: Optional[str] = None,
        queue: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        cursor: Optional[str] = None,
        page_size: Optional[int] = None,
    ) -> Paginator[Task]:
        """Every matching task, newest first, fetched page by page as the
        result is iterated (``.pages()`` walks the pages instead)."""
        return Paginator(
            lambda c: self.list_tasks(state=state, queue=queue, labels=labels, cursor=c, limit=page_size),
            cursor,
        )

    def cancel(self, task_id: str, reason: Optional[str] = None) -> Task:
        """Cancels a task that has not ended (``POST /tasks/{id}/cancel``).
        A worker holding it gets ``StaleLease`` on its next call.

        Raises:
            IllegalTransition: the task has already ended.
            Forbidden: a submitter cancelling someone else's task.
        """
        body = {} if reason is None else {"reason": reason}
        data = self._core.json("POST", f"/api/v1/tasks/{seg(task_id)}/cancel", body=body, idempotent=False)
        return Task.from_json(data)

    def get_run(self, run_id: str) -> dict[str, Any]:
        """One run with its events and guardrail decisions (``GET /runs/{id}``)."""
        data: dict[str, Any] = self._core.json("GET", f"/api/v1/runs/{seg(run_id)}", idempotent=True)
        return data

    def get_dossier(self, task_id: str) -> dict[str, Any]:
        """Everything about a task as one JSON document (``GET /tasks/{id}/dossier``)."""
        data: dict[str, Any] = self._core.json("GET", f"/api/v1/tasks/{seg(task_id)}/dossier", idempotent=True)
        return data

    def _submit_body(
        self,
        payload: Any,
        queue: Optional[str],
        priority: Optional[int],
        labels: Optional[Mapping[str, str]],
        steps: Optional[Sequence[Union[str, Mapping[str, Any]]]],
        max_attempts: Optional[int],
        delay: Optional[Union[Seconds, str]],
        run_at: Optional[Union[datetime, str]],
        review: Optional[bool],
        required_approvals: Optional[int],
        workdir: Optional[str],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if queue is not None:
            body["queue"] = queue
        if priority is not None:
            body["priority"] = priority
        if labels is not None:
            body["labels"] = dict(labels)
        if payload is not None:
            body["payload"] = payload
        if steps is not None:
            body["steps"] = [s if isinstance(s, str) else dict(s) for s in steps]
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        if delay is not None:
            body["delay"] = delay if isinstance(delay, str) else duration_param(delay)
        if run_at is not None:
            body["run_at"] = rfc3339(run_at)
        if review is not None or required_approvals is not None:
            body["review"] = {
                "required": bool(review) or bool(required_approvals),
                "required_approvals": required_approvals or 0,
            }
        if workdir is not None:
            body["workdir"] = workdir
        return body

    def _submit_headers(
        self, idempotency_key: Optional[str], traceparent: Optional[str]
    ) -> tuple[dict[str, str], bool]:
        headers: dict[str, str] = {}
        if idempotency_key is None and self.auto_idempotency_key:
            idempotency_key = f"fl-py-{uuid.uuid4().hex}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if traceparent is not None:
            headers["traceparent"] = traceparent
        return headers, idempotency_key is not None
