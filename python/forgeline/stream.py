"""Server-sent event streams that survive dropped connections.

A task stream (``GET /tasks/{id}/events``) replays a task's stored events and
follows new ones until the task ends; the firehose (``GET /events``) follows
every task and never ends by itself. :class:`EventStream` iterates over
either as :class:`~forgeline.models.Event` objects and remembers the id of
the last event it yielded. When the connection breaks (reset, EOF in the
middle, no byte for ``read_timeout`` seconds although the server sends a
keep-alive every 15 s, or the server restarting) it reconnects with
``Last-Event-ID`` set to that id: the server then sends only later events,
so the caller sees no gap and no duplicate. Reconnecting is bounded:
``max_reconnects`` consecutive attempts that deliver no event, with an
exponential backoff, then the last error is raised.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Callable, Generator, Iterator, Optional, Union

import httpx

from ._http import HttpCore
from .errors import ForgelineError, TransportError, Unavailable
from .models import TERMINAL_STATES, Event

__all__ = ["EventStream", "Seconds", "duration_param", "parse_sse"]

log = logging.getLogger("forgeline.stream")

#: A duration given as seconds or as a ``timedelta``.
Seconds = Union[float, int, timedelta]

# Opens the stream for a resume point (None: from the start); returns the
# streamed response (status 2xx, body unread).
Opener = Callable[[Optional[str], Optional[int]], httpx.Response]


def to_seconds(value: Seconds) -> float:
    """Seconds from a number or a ``timedelta``."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def duration_param(value: Seconds) -> str:
    """A duration as the server reads it (humantime): whole milliseconds."""
    ms = int(round(to_seconds(value) * 1000))
    if ms <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return f"{ms}ms"


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[Optional[str], str, Optional[str]]]:
    """Parses SSE lines into ``(event, data, id)`` tuples, one per dispatched
    event (comments and keep-alives are skipped)."""
    event: Optional[str] = None
    data: list[str] = []
    event_id: Optional[str] = None
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data), event_id
            event, data, event_id = None, [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
    if data:
        yield event, "\n".join(data), event_id


class EventStream:
    """An iterator over events that resumes transparently after a dropped
    connection (see the module doc). Use it in a ``for`` loop, or as a
    context manager to close the connection early::

        with client.events(task_id) as stream:
            for event in stream:
                print(event.type, event.data)
                if event.type == "task_leased":
                    break
        resume_from = stream.last_event_id

    Attributes:
        last_event_id: The id of the last event yielded (or the resume point
            it was opened with): pass it as ``last_event_id`` to continue
            later from exactly there.
        reconnects: How many times the stream reconnected.
        task_id: The task of a task stream (also set by a submit-and-follow
            stream once the server named the task), else None.
    """

    def __init__(
        self,
        core: HttpCore,
        opener: Opener,
        *,
        last_event_id: Optional[str],
        task_id: Optional[str],
        max_events: Optional[int],
        idle_timeout: Optional[float],
        max_reconnects: int,
        reconnect_delay: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._core = core
        self._open = opener
        self._max_events = max_events
        self._idle_timeout = idle_timeout
        self._max_reconnects = max_reconnects
        self._reconnect_delay = reconnect_delay
        self._sleep = sleep
        self._response: Optional[httpx.Response] = None
        self._closed = False
        self.last_event_id = last_event_id
        self.task_id = task_id
        self.reconnects = 0
        self._gen: Generator[Event, None, None] = self._run()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        return next(self._gen)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the iteration ends."""
        self._closed = True
        response, self._response = self._response, None
        if response is not None:
            response.close()
        self._gen.close()

    def _task_has_ended(self) -> bool:
        if self.task_id is None:
            return False
        body = self._core.json("GET", f"/api/v1/tasks/{self.task_id}", params={"events": 0}, idempotent=True)
        return isinstance(body, dict) and body.get("state") in TERMINAL_STATES

    def _run(self) -> Generator[Event, None, None]:
        delivered = 0
        failures = 0  # consecutive connections that delivered nothing
        while not self._closed:
            remaining = None if self._max_events is None else self._max_events - delivered
            if remaining is not None and remaining <= 0:
                return
            last_activity = time.monotonic()
            broke: Optional[ForgelineError] = None
            got_event = False
            try:
                response = self._open(self.last_event_id, remaining)
            except (TransportError, Unavailable) as e:
                broke = e
            else:
                self._response = response
                if self.task_id is None:
                    self.task_id = response.headers.get("x-task-id")
                try:
                    for _type, data, _id in parse_sse(response.iter_lines()):
                        event = Event.from_json(_decode(data))
                        self.last_event_id = event.id or _id or self.last_event_id
                        got_event = True
                        failures = 0
                        delivered += 1
                        last_activity = time.monotonic()
                        yield event
                        if self._max_events is not None and delivered >= self._max_events:
                            return
                        if self.task_id is not None and event.state in TERMINAL_STATES:
                            return  # a task stream's last event
                except httpx.TransportError as e:
                    broke = TransportError(f"the event stream broke: {type(e).__name__}: {e}", sent=True)
                    broke.__cause__ = e
                finally:
                    self._response = None
                    response.close()
            if self._closed:
                return
            if broke is None:
                # The server ended the stream: a bound was reached, the task
                # ended, or the server is shutting down (then resume).
                idle = time.monotonic() - last_activity
                if self._idle_timeout is not None and idle >= self._idle_timeout - 0.05:
                    return
                if self._task_has_ended():
                    return
                broke = TransportError("the server closed the event stream", sent=True)
            if not got_event:
                failures += 1
            if failures > self._max_reconnects:
                raise broke
            delay = min(10.0, self._reconnect_delay * (2 ** max(0, failures - 1)))
            log.info(
                "forgeline: event stream interrupted (%s); resuming after %s in %.2fs",
                broke.message,
                self.last_event_id,
                delay,
            )
            self._sleep(delay)
            self.reconnects += 1


def _decode(data: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(data)
    except ValueError as e:
        raise ForgelineError(f"an event's data is not JSON: {data[:200]!r}") from e
    if not isinstance(value, dict):
        raise ForgelineError(f"an event's data is not a JSON object: {data[:200]!r}")
    return value
