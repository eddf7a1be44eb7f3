"""Fixtures of the SDK tests: one server for the session (each test uses
its own queue names), tokens, clients, and workers that are always stopped.

Run: FORGELINE_BIN=target/release/forgeline python3 -m pytest tests/sdk -q
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.sdk.helpers import Server, run_in_thread, wait_until

import forgeline  # noqa: E402 - helpers put the repository's python/ on sys.path

logging.getLogger("forgeline").setLevel(logging.INFO)


def _start_server(tmp: Path, config: Path | None = None) -> Server:
    server = Server(tmp) if config is None else Server(tmp, config)
    server.start()
    return server


def _stop_server(server: Server) -> None:
    code = server.stop()
    assert code == 0, f"forgeline exited {code} after SIGTERM:\n{server.log()}"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server (tests/sdk/forgeline_sdk.toml)."""
    srv = _start_server(tmp_path_factory.mktemp("forgeline"))
    try:
        yield srv
    finally:
        _stop_server(srv)


@pytest.fixture(scope="session")
def admin_token(server: Server) -> str:
    """A token with every role (principal ``admin``)."""
    return server.admin_token()


@pytest.fixture(scope="session")
def worker_token(server: Server) -> str:
    """A worker-only token (principal ``sdk-worker``)."""
    return server.token("sdk-worker", "worker", "observer")


@pytest.fixture
def client(server: Server, admin_token: str) -> Iterator[forgeline.Client]:
    """A client with the admin token."""
    with forgeline.Client(server.url, admin_token) as c:
        yield c


@pytest.fixture(scope="session")
def submitter_token(server: Server) -> str:
    """A submitter token (principal ``sdk-submitter``): reviews of its tasks
    are decided by another principal (four eyes)."""
    return server.token("sdk-submitter", "submitter", "observer")


@pytest.fixture
def submitter_client(server: Server, submitter_token: str) -> Iterator[forgeline.Client]:
    """A client with the submitter token."""
    with forgeline.Client(server.url, submitter_token) as c:
        yield c


@pytest.fixture
def worker_client(server: Server, worker_token: str) -> Iterator[forgeline.Client]:
    """A client with the worker token."""
    with forgeline.Client(server.url, worker_token) as c:
        yield c


_counter = itertools.count()


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A queue name of this test's own."""
    return f"q{next(_counter)}-{uuid.uuid4().hex[:8]}"


class Workers:
    """Starts workers in threads and stops every one at the end of the test."""

    def __init__(self) -> None:
        self.started: list[tuple[forgeline.Worker, threading.Thread]] = []

    def start(self, worker: forgeline.Worker) -> forgeline.Worker:
        thread = run_in_thread(lambda: worker.run(install_signal_handlers=False), f"worker-{worker.worker_id}")
        self.started.append((worker, thread))
        wait_until("the worker to run", lambda: worker.running or not thread.is_alive(), timeout=30)
        return worker

    def stop(self, worker: forgeline.Worker) -> None:
        for w, thread in self.started:
            if w is worker:
                w.stop()
                thread.join(timeout=90)
                assert not thread.is_alive(), f"worker {w.worker_id} did not stop"
                error = getattr(thread, "error", None)
                assert error is None, f"worker {w.worker_id} raised {error!r}"

    def stop_all(self) -> None:
        for w, _ in self.started:
            w.stop()
        for w, _ in self.started:
            self.stop(w)


@pytest.fixture
def workers() -> Iterator[Workers]:
    """Runs workers in threads; all are stopped when the test ends."""
    ws = Workers()
    try:
        yield ws
    finally:
        ws.stop_all()


@pytest.fixture
def wait_for_task(client: forgeline.Client) -> Callable[..., forgeline.Task]:
    """``wait_for_task(task_id, *states)``: polls until the task is in one of
    ``states``; returns it."""

    def wait(task_id: str, *states: str, timeout: float = 60.0, **kw: Any) -> forgeline.Task:
        def check() -> forgeline.Task | None:
            task = client.get_task(task_id, **kw)
            return task if task.state in states else None

        return wait_until(f"task {task_id} to be {'/'.join(states)}", check, timeout=timeout)

    return wait


@pytest.fixture(scope="module")
def ratelimited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a one-request `read` bucket (forgeline_sdk_ratelimit.toml)."""
    from tests.sdk.helpers import RATELIMIT_CONFIG

    srv = _start_server(tmp_path_factory.mktemp("forgeline-ratelimit"), RATELIMIT_CONFIG)
    try:
        yield srv
    finally:
        _stop_server(srv)
