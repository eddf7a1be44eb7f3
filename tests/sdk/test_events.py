"""Event streams: resuming with Last-Event-ID by hand and transparently after
a cut connection, with no gap and no duplicate; submit-and-follow; the
firehose."""

from __future__ import annotations

from typing import Any

import forgeline
from tests.sdk.helpers import DropProxy


def _agents(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"type": "agent_started", "agent_name": f"agent-{i}"} for i in range(start, start + n)]


def _leased_task(client: forgeline.Client, queue: str) -> tuple[forgeline.Task, forgeline.Lease]:
    task = client.submit({"stream": True}, queue=queue)
    leases = client.lease(queue, "stream-tester", wait_ms=10_000, lease_ms=120_000)
    assert [lease.task.id for lease in leases] == [task.id]
    return task, leases[0]


def _stored_ids(client: forgeline.Client, task_id: str) -> list[str]:
    task = client.get_task(task_id, events=1000)
    assert not task.raw["events_truncated"]
    return [e.id for e in task.events]


def test_a_stream_closed_by_the_client_resumes_from_last_event_id_with_no_gap_and_no_duplicate(
    client: forgeline.Client, queue: str
) -> None:
    task, lease = _leased_task(client, queue)
    client.report_events(lease.lease_id, lease.token, _agents(4))

    first: list[forgeline.Event] = []
    with client.events(task.id) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 5:
                break
    assert stream.last_event_id == first[-1].id
    assert [e.type for e in first] == ["task_submitted", "task_queued", "task_leased", "agent_started", "agent_started"]

    client.report_events(lease.lease_id, lease.token, _agents(3, start=4))
    client.complete(lease.lease_id, lease.token, {"ok": True})
    rest = list(client.events(task.id, last_event_id=stream.last_event_id))

    ids = [e.id for e in first + rest]
    assert ids == _stored_ids(client, task.id)
    assert len(set(ids)) == len(ids)
    assert rest[-1].type == "task_completed" and rest[-1].state == "completed"
    assert [e.seq for e in first + rest] == sorted(e.seq for e in first + rest)


def test_a_cut_connection_is_resumed_transparently_by_the_same_iterator(
    server: Any, admin_token: str, client: forgeline.Client, queue: str
) -> None:
    task, lease = _leased_task(client, queue)
    client.report_events(lease.lease_id, lease.token, _agents(5))
    proxy = DropProxy(server.url)
    try:
        with forgeline.Client(proxy.url, admin_token) as through_proxy:
            stream = through_proxy.events(task.id)
            seen = [next(stream) for _ in range(8)]  # submitted, queued, leased, 5 agents
            assert seen[-1].data["agent_name"] == "agent-4"

            proxy.drop_all()
            client.report_events(lease.lease_id, lease.token, _agents(5, start=5))
            client.complete(lease.lease_id, lease.token, "done")
            seen += list(stream)

        assert stream.reconnects >= 1 and proxy.accepted >= 2
        ids = [e.id for e in seen]
        assert ids == _stored_ids(client, task.id), "a gap or a duplicate across the reconnection"
        assert [e.data.get("agent_name") for e in seen if e.type == "agent_started"] == [f"agent-{i}" for i in range(10)]
        assert seen[-1].type == "task_completed"
    finally:
        proxy.close()


def test_a_stream_opened_after_the_last_event_ends_at_once(client: forgeline.Client, queue: str) -> None:
    task, lease = _leased_task(client, queue)
    client.complete(lease.lease_id, lease.token, None)
    events = list(client.events(task.id))
    assert events[-1].type == "task_completed"
    assert list(client.events(task.id, last_event_id=events[-1].id)) == []


def test_submit_and_follow_streams_a_task_to_its_end(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any
) -> None:
    workers.start(forgeline.Worker(worker_client, queue, lambda ctx: {"doubled": ctx.payload * 2}, poll_wait_ms=500))
    stream = client.submit_and_follow(21, queue=queue)
    events = list(stream)
    assert events[0].type == "task_submitted" and events[-1].type == "task_completed"
    assert stream.task_id == events[0].task_id
    assert client.get_task(events[0].task_id).result == {"doubled": 42}


def test_the_firehose_filters_by_queue_and_type_and_resumes(client: forgeline.Client, queue: str) -> None:
    ids = [client.submit(i, queue=queue).id for i in range(3)]
    first = list(client.firehose(queue=queue, types=["task_submitted"], max_events=2))
    assert [e.task_id for e in first] == ids[:2]
    rest = list(client.firehose(queue=queue, types=["task_submitted"], last_event_id=first[-1].id, max_events=1))
    assert [e.task_id for e in rest] == ids[2:]
    assert {e.type for e in first + rest} == {"task_submitted"}
