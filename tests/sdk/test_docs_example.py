"""The worker example of docs/sdk-python.md runs as written: it completes a
task with steps, fails one without, and exits 0 on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import forgeline
from tests.sdk.helpers import REPO, clean_env, wait_until

DOC = REPO / "docs" / "sdk-python.md"
MARKER = "<!-- sdk-example: worker -->"


def worker_example() -> str:
    """The ```python block right after the marker."""
    text = DOC.read_text()
    assert MARKER in text, f"{DOC} lost its {MARKER} marker"
    m = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert m, "no python block after the marker"
    return m.group(1)


def test_the_worker_example_of_the_docs_runs_as_written(
    server: Any, admin_token: str, client: forgeline.Client, tmp_path: Path, wait_for_task: Any
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(worker_example())
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env(FORGELINE_URL=server.url, FORGELINE_TOKEN=admin_token, PYTHONPATH=str(REPO / "python")),
    )
    try:
        task = client.submit({"goal": "fix the failing test"}, queue="agents", steps=["lint", "test"])
        bad = client.submit({"goal": "nothing to check"}, queue="agents")
        done = wait_for_task(task.id, "completed", events=100)
        assert done.result == {"goal": "fix the failing test", "steps_passed": 2}
        types = [e.type for e in done.events]
        assert types.count("tool_invoked") == 2 and types.count("verification_finished") == 2
        assert [s["outcome"] for s in done.runs[0]["steps"]] == ["passed", "passed"]
        failed = wait_for_task(bad.id, "failed")
        assert failed.last_error == "no steps to verify" and failed.attempts == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    wait_until("the example worker to report itself offline", lambda: any(
        w.status == "offline" for w in client.list_workers() if w.detail == "queue agents"
    ))
