"""The worker against a real server: completion with events, retries and
the dead-letter, lease loss and fencing, the status it reports."""

from __future__ import annotations

import threading
from typing import Any

import forgeline
from tests.sdk.helpers import RecordingTransport, wait_until


def test_a_submitted_task_is_handled_by_a_worker_and_completes_with_the_handler_result(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    worker = forgeline.Worker(worker_client, queue, concurrency=2, poll_wait_ms=1000)

    @worker.handler
    def handle(ctx: forgeline.TaskContext) -> Any:
        with ctx.agent("coder", model="m-1"):
            flags = ctx.tool("bash", agent="coder", call_id="c1", duration_ms=12)
            assert flags == []
            with ctx.verification("unit-tests") as v:
                v.exit_code, v.output = 0, "12 passed"
        return {"echo": ctx.payload, "attempt": ctx.attempt}

    task = client.submit(
        {"goal": "fix the test"}, queue=queue, priority=7, labels={"project": "sdk"}, steps=["unit-tests"]
    )
    assert task.state == "queued" and task.priority == 7 and task.labels == {"project": "sdk"}
    workers.start(worker)

    done = wait_for_task(task.id, "completed", events=100)
    assert done.result == {"echo": {"goal": "fix the test"}, "attempt": 1}
    types = [e.type for e in done.events]
    for expected in ("agent_started", "tool_invoked", "verification_started", "verification_finished",
                     "agent_finished", "task_completed"):
        assert expected in types, f"{expected} missing from {types}"
    assert types.index("verification_finished") < types.index("task_completed")
    finished = next(e for e in done.events if e.type == "verification_finished")
    assert finished.data["outcome"] == "passed" and finished.data["exit_code"] == 0
    assert isinstance(finished.data["duration_ms"], int)
    assert finished.data["output_tail"] == "12 passed"
    step = done.runs[0]["steps"][0]
    assert step["name"] == "unit-tests" and step["outcome"] == "passed"
    assert done.runs[0]["agents"] == ["coder"] and done.runs[0]["worker"] == worker.worker_id
    wait_until("the stats to count the completion", lambda: worker.stats.completed == 1)


def test_a_failing_handler_is_retried_then_dead_lettered_and_a_requeue_runs_it_again(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    healthy = threading.Event()
    attempts: list[int] = []

    def handle(ctx: forgeline.TaskContext) -> Any:
        attempts.append(ctx.attempt)
        if not healthy.is_set():
            raise ConnectionError("database locked")
        return "fine now"

    task = client.submit({"n": 1}, queue=queue, max_attempts=2)
    worker = workers.start(forgeline.Worker(worker_client, queue, handle, poll_wait_ms=500))

    dead = wait_for_task(task.id, "dead")
    assert dead.attempts == 2 and attempts == [1, 2]
    assert dead.last_error == "ConnectionError: database locked"
    listed = [t for t in client.iter_dead_letter(queue=queue)]
    assert [t.id for t in listed] == [task.id]
    assert listed[0].last_error == "ConnectionError: database locked"

    healthy.set()
    requeued = client.requeue(task.id)
    assert requeued.state == "queued" and requeued.attempts_left == 2
    done = wait_for_task(task.id, "completed")
    assert done.result == "fine now" and done.attempts == 3
    assert worker.stats.failed == 2
    assert client.list_dead_letter(queue=queue).items == []


def test_fatal_fails_the_task_at_once_and_retry_schedules_another_attempt(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    def handle(ctx: forgeline.TaskContext) -> Any:
        if ctx.payload == "fatal":
            raise forgeline.Fatal("the input is malformed")
        if ctx.attempt == 1:
            raise forgeline.Retry("rate limited upstream")
        return ctx.attempt

    fatal = client.submit("fatal", queue=queue, max_attempts=5)
    retried = client.submit("retry", queue=queue, max_attempts=5)
    workers.start(forgeline.Worker(worker_client, queue, handle, concurrency=2, poll_wait_ms=500))

    failed = wait_for_task(fatal.id, "failed")
    assert failed.attempts == 1 and failed.last_error == "the input is malformed"
    done = wait_for_task(retried.id, "completed")
    assert done.result == 2 and done.last_error == "rate limited upstream"


def test_a_worker_that_lost_its_lease_does_not_complete_the_task_and_does_not_retry(
    server: Any, worker_token: str, client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    recorder = RecordingTransport()
    slow_client = forgeline.Client(server.url, worker_token, transport=recorder)
    started, release = threading.Event(), threading.Event()

    def slow(ctx: forgeline.TaskContext) -> Any:
        started.set()
        release.wait(120)
        return {"by": "worker-1"}

    # Worker 1 holds a 1 s lease and never heartbeats (interval of an hour).
    w1 = forgeline.Worker(
        slow_client, queue, slow, worker_id="worker-1", lease_ms=1000, heartbeat_interval=3600, poll_wait_ms=500
    )
    task = client.submit({"job": 1}, queue=queue, max_attempts=3)
    workers.start(w1)
    assert started.wait(60), "worker 1 never got the task"

    # The lease expires; worker 2 gets the task and completes it.
    wait_until(
        "the lease of worker 1 to expire",
        lambda: any(e.type == "lease_expired" for e in client.get_task(task.id, events=100).events),
    )
    w2 = workers.start(forgeline.Worker(client, queue, lambda ctx: {"by": "worker-2"}, worker_id="worker-2", poll_wait_ms=500))
    done = wait_for_task(task.id, "completed")
    assert done.result == {"by": "worker-2"}

    # Worker 1 finishes late: its completion is refused once and not retried.
    release.set()
    wait_until("worker 1 to notice the lost lease", lambda: w1.stats.lease_lost == 1)
    completes = recorder.calls("POST", "/complete")
    assert [c["status"] for c in completes] == [409]
    assert w1.stats.completed == 0 and w2.stats.completed == 1
    final = client.get_task(task.id)
    assert final.state == "completed" and final.result == {"by": "worker-2"}
    assert [r["outcome"] for r in final.runs] == ["lease_expired", "completed"]
    workers.stop(w1)
    slow_client.close()


def test_a_cancelled_task_stops_its_handler_and_its_result_is_dropped(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any, wait_for_task: Any
) -> None:
    started = threading.Event()
    saw_stopping = threading.Event()

    def handle(ctx: forgeline.TaskContext) -> Any:
        started.set()
        if ctx.stopping.wait(120):
            saw_stopping.set()
        return "too late"

    # Heartbeats every 200 ms notice the cancellation quickly.
    worker = workers.start(
        forgeline.Worker(worker_client, queue, handle, lease_ms=3000, heartbeat_interval=0.2, poll_wait_ms=500)
    )
    task = client.submit(None, queue=queue)
    assert started.wait(60)
    client.cancel(task.id, reason="superseded")
    assert saw_stopping.wait(60), "the handler was not told to stop"
    wait_until("the worker to drop the result", lambda: worker.stats.lease_lost == 1)
    final = client.get_task(task.id)
    assert final.state == "cancelled" and final.result is None
    assert worker.stats.completed == 0


def test_the_worker_reports_itself_and_shows_in_the_worker_list(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any
) -> None:
    worker = workers.start(forgeline.Worker(worker_client, queue, lambda ctx: None, worker_id=f"{queue}-w", poll_wait_ms=500))
    listed = wait_until(
        "the worker in GET /workers",
        lambda: next((w for w in client.list_workers() if w.id == worker.worker_id), None),
    )
    assert listed.status in ("idle", "busy")
    workers.stop(worker)
    offline = next(w for w in client.list_workers() if w.id == worker.worker_id)
    assert offline.status == "offline"


def test_burst_mode_handles_what_is_ready_and_returns(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str
) -> None:
    ids = [client.submit(i, queue=queue).id for i in range(5)]
    seen: list[Any] = []
    worker = forgeline.Worker(worker_client, queue, lambda ctx: seen.append(ctx.payload), concurrency=3)
    worker.run(install_signal_handlers=False, burst=True)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert {client.get_task(i).state for i in ids} == {"completed"}


def test_a_handler_that_returns_within_the_shutdown_grace_completes_its_task(
    client: forgeline.Client, worker_client: forgeline.Client, queue: str, workers: Any
) -> None:
    started = threading.Event()

    def handle(ctx: forgeline.TaskContext) -> Any:
        started.set()
        assert ctx.stopping.wait(120), "never asked to stop"
        return "wrapped up"

    worker = workers.start(forgeline.Worker(worker_client, queue, handle, shutdown_grace=60, poll_wait_ms=500))
    task = client.submit(None, queue=queue)
    assert started.wait(60)
    workers.stop(worker)  # returns once the handler finished and completed
    done = client.get_task(task.id)
    assert done.state == "completed" and done.result == "wrapped up"
    assert worker.stats.completed == 1 and worker.stats.released == 0
