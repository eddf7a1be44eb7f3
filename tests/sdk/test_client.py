"""The client against a real server: submit options, idempotency keys,
pagination with cursors, health probes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import forgeline


def test_submit_passes_every_option_to_the_server(client: forgeline.Client, queue: str) -> None:
    task = client.submit(
        {"goal": "g"},
        queue=queue,
        priority=9,
        labels={"project": "sdk", "team/x": "y"},
        steps=["build", "unit:test"],
        max_attempts=4,
        required_approvals=2,
        workdir="repo/web",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    assert (task.queue, task.priority, task.max_attempts, task.steps) == (queue, 9, 4, ["build", "unit:test"])
    assert task.labels == {"project": "sdk", "team/x": "y"} and task.payload == {"goal": "g"}
    assert task.raw["review"] == {"required": True, "required_approvals": 2}
    assert task.raw["workdir"] == "repo/web"
    assert task.raw["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert task.raw["idempotency_key"].startswith("fl-py-")


def test_delay_and_run_at_schedule_a_task(client: forgeline.Client, queue: str) -> None:
    delayed = client.submit(None, queue=queue, delay=timedelta(minutes=10))
    assert delayed.state == "scheduled" and delayed.state_detail["reason"] == "delayed"
    later = client.submit(None, queue=queue, run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    assert later.state == "scheduled"
    assert client.submit(None, queue=queue, delay="90s").state == "scheduled"
    with pytest.raises(ValueError):
        client.submit(None, queue=queue, run_at=datetime.now())  # naive: ambiguous


def test_a_submit_with_an_idempotency_key_returns_the_same_task_and_a_different_body_conflicts(
    client: forgeline.Client, queue: str
) -> None:
    first = client.submit({"n": 1}, queue=queue, idempotency_key=f"{queue}-key")
    again = client.submit({"n": 1}, queue=queue, idempotency_key=f"{queue}-key")
    assert again.id == first.id
    with pytest.raises(forgeline.IdempotencyKeyReused):
        client.submit({"n": 2}, queue=queue, idempotency_key=f"{queue}-key")
    # Without a key each submit is a new task (the generated keys differ).
    assert client.submit({"n": 1}, queue=queue).id != client.submit({"n": 1}, queue=queue).id


def test_listing_walks_every_page_with_cursors(client: forgeline.Client, queue: str) -> None:
    ids = [client.submit(i, queue=queue, labels={"batch": queue}).id for i in range(7)]
    page = client.list_tasks(queue=queue, limit=3)
    assert len(page.items) == 3 and page.next_cursor is not None
    pages = list(client.iter_tasks(queue=queue, page_size=3).pages())
    assert [len(p.items) for p in pages][:2] == [3, 3]
    walked = [t.id for t in client.iter_tasks(labels={"batch": queue}, page_size=3)]
    assert walked == list(reversed(ids))  # newest first


def test_health_probes(client: forgeline.Client) -> None:
    ready = client.health()
    assert ready.ok and ready.status_code == 200 and ready.checks["store_writable"] == "ok"
    assert client.health("live").ok


def test_complete_many_and_fail_many_answer_per_item(client: forgeline.Client, queue: str) -> None:
    for n in range(3):
        client.submit({"n": n}, queue=queue)
    a, b, c = client.lease(queue, "w-batch", max=3, wait_ms=2000)
    done = client.complete_many([(a.lease_id, a.token, {"ok": 1}), (a.lease_id, a.token, None)])
    assert [r.status for r in done] == [200, 409]
    assert done[0].ok and done[0].task is not None and done[0].task.state == "completed"
    assert not done[1].ok and done[1].error_code == "stale_lease" and done[1].task is None
    with pytest.raises(forgeline.InvalidRequest):
        client.fail_many([(b.lease_id, b.token, "", False)])
    failed = client.fail_many([(b.lease_id, b.token, "boom", False), (c.lease_id, c.token, "again", True)])
    assert [r.status for r in failed] == [200, 200]
    assert failed[0].task is not None and failed[0].task.state == "failed"
    assert failed[1].task is not None and failed[1].task.state in ("scheduled", "queued")


def test_an_observer_reads_another_principals_task_with_its_content_withheld(
    server, submitter_client: forgeline.Client, queue: str
) -> None:
    task = submitter_client.submit({"secret_plan": "p-42"}, queue=queue)
    assert submitter_client.get_task(task.id).withheld == []
    with forgeline.Client(server.url, server.token("sdk-observer", "observer")) as observer:
        seen = observer.get_task(task.id)
        assert seen.state == "queued" and seen.payload is None
        assert seen.withheld == ["payload", "result", "step_output", "event_data"]
    with forgeline.Client(server.url, server.token("sdk-other", "submitter")) as other:
        with pytest.raises(forgeline.NotFound):
            other.get_task(task.id)
