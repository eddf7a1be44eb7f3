"""Event streams: one task's events, and the firehose."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from ._api_base import APIBase, bounds, seg
from .stream import EventStream, Seconds, to_seconds

__all__ = ["StreamsAPI"]


class StreamsAPI(APIBase):
    """The event stream routes of :class:`~forgeline.Client`."""

    def events(
        self,
        task_id: str,
        *,
        last_event_id: Optional[str] = None,
        max_events: Optional[int] = None,
        idle_timeout: Optional[Seconds] = None,
        max_reconnects: int = 5,
        read_timeout: float = 60.0,
    ) -> EventStream:
        """Follows one task's events (``GET /tasks/{id}/events``): the stored
        ones after ``last_event_id`` (all of them when None), then new ones,
        until the task ends (``completed``, ``failed``, ``dead``,
        ``cancelled``). A dropped connection is resumed with
        ``Last-Event-ID`` (no gap, no duplicate), up to ``max_reconnects``
        consecutive attempts that bring no event.

        Args:
            last_event_id: Resume after this event id.
            max_events: Stop after this many events (across reconnects).
            idle_timeout: Stop after this long without an event.
            max_reconnects: Consecutive fruitless reconnects before raising.
            read_timeout: Seconds without a byte (the server sends a
                keep-alive every ``events.keepalive``, 15 s) before the
                connection is presumed dead and resumed.

        Raises (when iterated):
            NotFound: no such task.
            TransportError: the stream could not be resumed.
        """
        path = f"/api/v1/tasks/{seg(task_id)}/events"
        params = bounds(None, idle_timeout)
        return EventStream(
            self._core,
            lambda last, remaining: self._open_stream(path, last, remaining, params, read_timeout),
            last_event_id=last_event_id,
            task_id=task_id,
            max_events=max_events,
            idle_timeout=None if idle_timeout is None else to_seconds(idle_timeout),
            max_reconnects=max_reconnects,
            reconnect_delay=self._core.retry.backoff_base,
        )

    def firehose(
        self,
        *,
        queue: Optional[str] = None,
        types: Optional[Iterable[str]] = None,
        last_event_id: Optional[str] = None,
        max_events: Optional[int] = None,
        idle_timeout: Optional[Seconds] = None,
        max_reconnects: int = 5,
        read_timeout: float = 60.0,
    ) -> EventStream:
        """Follows every task's events (``GET /api/v1/events``), optionally
        only a queue's and only some ``types``. Without ``last_event_id``
        it replays the whole stored history first. It never ends by itself:
        break out of the loop, close it, or give ``max_events`` or
        ``idle_timeout``. Resumes like :meth:`events`."""
        params: list[tuple[str, Any]] = [("queue", queue)]
        if types is not None:
            params.append(("type", ",".join(types)))
        params += bounds(None, idle_timeout)
        return EventStream(
            self._core,
            lambda last, remaining: self._open_stream("/api/v1/events", last, remaining, params, read_timeout),
            last_event_id=last_event_id,
            task_id=None,
            max_events=max_events,
            idle_timeout=None if idle_timeout is None else to_seconds(idle_timeout),
            max_reconnects=max_reconnects,
            reconnect_delay=self._core.retry.backoff_base,
        )
