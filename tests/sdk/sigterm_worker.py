"""A worker process written with the SDK, for tests/sdk/test_shutdown.py.

Reads FORGELINE_URL, FORGELINE_TOKEN and SDK_QUEUE from the environment,
prints one line per task it starts (``started <task id>``), and runs until
SIGTERM or SIGINT. Its handler never returns on its own and ignores
``ctx.stopping``: the worker must still give the lease back and exit 0.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "python"))

import forgeline  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    client = forgeline.Client()  # FORGELINE_URL, FORGELINE_TOKEN
    worker = forgeline.Worker(client, os.environ["SDK_QUEUE"], concurrency=2, poll_wait_ms=1000, worker_id="sigterm-worker")
    forever = threading.Event()

    @worker.handler
    def handle(ctx: forgeline.TaskContext) -> None:
        print(f"started {ctx.task_id}", flush=True)
        forever.wait()

    worker.run()
    print(f"stopped released={worker.stats.released}", flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
