"""SIGTERM to a worker process: it gives its leases back and exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Any

import forgeline
from tests.sdk.helpers import HERE, clean_env, wait_until


class WorkerProcess:
    """tests/sdk/sigterm_worker.py, with its stdout lines collected."""

    def __init__(self, url: str, token: str, queue: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "sigterm_worker.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(FORGELINE_URL=url, FORGELINE_TOKEN=token, SDK_QUEUE=queue),
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: Any, into: list[str]) -> None:
        for line in pipe:
            into.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.errors)

    def terminate_and_wait(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the worker did not exit within 60 s of SIGTERM:\n{self.stderr}") from None
        for reader in self._readers:
            reader.join(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        """Kills the process if it still runs, and closes its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def _run_and_terminate(server: Any, worker_token: str, client: forgeline.Client, queue: str) -> forgeline.Task:
    """Starts the worker process, lets it take a task, SIGTERMs it; returns the task."""
    worker = WorkerProcess(server.url, worker_token, queue)
    try:
        task = client.submit({"long": True}, queue=queue, max_attempts=5)
        wait_until("the worker process to start the task", lambda: f"started {task.id}" in worker.lines)
        assert client.get_task(task.id).state == "running"
        code = worker.terminate_and_wait()
        assert code == 0, f"the worker exited {code}:\n{worker.stderr}"
        assert worker.lines[-1] == "stopped released=1", worker.lines
        return task
    finally:
        worker.kill()


def test_sigterm_makes_a_worker_process_give_its_lease_back_and_exit_0(
    server: Any, worker_token: str, client: forgeline.Client, queue: str
) -> None:
    task = _run_and_terminate(server, worker_token, client, queue)
    # The task can be leased again right away (within the long-poll, not
    # after the 30 s lease would have run out).
    leases = client.lease(queue, "after-sigterm", wait_ms=10_000)
    assert [lease.task.id for lease in leases] == [task.id]
    client.complete(leases[0].lease_id, leases[0].token, "finished by another worker")
    assert client.get_task(task.id).state == "completed"


def test_sigterm_gives_the_lease_back_without_counting_the_attempt(
    server: Any, worker_token: str, client: forgeline.Client, queue: str
) -> None:
    task = _run_and_terminate(server, worker_token, client, queue)
    queued = wait_until(
        "the task to be queued again",
        lambda: (lambda t: t if t.state == "queued" else None)(client.get_task(task.id, events=100)),
    )
    reasons = [e.data.get("reason") for e in queued.events if e.type == "task_queued"]
    assert reasons[-1] == "released"
    assert queued.attempts_left == 5
