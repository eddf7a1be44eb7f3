"""What the SDK tests share: the server process, token minting, condition
waits, a request-recording transport and a TCP proxy that can cut its
connections.

The server is the real release binary (``$FORGELINE_BIN``, else
``target/release/forgeline``; the tests never build it), started with
``serve --port 0 --data-dir <tmp> --config <toml>`` on 127.0.0.1 and
stopped with SIGTERM, after which it must exit 0.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import httpx

REPO = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
CONFIG = HERE / "forgeline_sdk.toml"
RATELIMIT_CONFIG = HERE / "forgeline_sdk_ratelimit.toml"

# The SDK under test is the repository's, not an installed copy.
sys.path.insert(0, str(REPO / "python"))

T = TypeVar("T")

#: Generous: the tests share two cores with whatever else runs.
DEFAULT_TIMEOUT = 60.0


def forgeline_binary() -> Path:
    """The server binary; fails (never skips) when it is missing."""
    path = Path(os.environ.get("FORGELINE_BIN") or REPO / "target" / "release" / "forgeline")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AssertionError(
            f"missing forgeline binary {path}: build it with `cargo build --release` "
            "or point FORGELINE_BIN at one"
        )
    return path


def wait_until(what: str, check: Callable[[], Optional[T]], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.05) -> T:
    """Calls ``check`` until it returns a truthy value, which is returned;
    fails after ``timeout`` seconds, naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last_error = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        time.sleep(interval)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without FORGELINE_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGELINE_")}
    env.update(extra)
    return env


class Server:
    """One forgeline server on 127.0.0.1 with a fresh data directory."""

    def __init__(self, tmp: Path, config: Path = CONFIG) -> None:
        self.binary = forgeline_binary()
        self.config = config
        self.data_dir = tmp / "data"
        self.log_path = tmp / "forgeline.log"
        self.secret = secrets.token_urlsafe(48)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.url = ""
        self._admin: Optional[str] = None

    def env(self) -> dict[str, str]:
        """The server's environment (and the token CLI's)."""
        return clean_env(FORGELINE_JWT_SECRET=self.secret, RUST_LOG="info")

    def start(self, port: int = 0) -> Server:
        """Starts the server (on ``port``, 0 for any free one) and waits until
        it is ready. Starting again after ``stop`` reuses the data directory."""
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--port", str(port), "--data-dir", str(self.data_dir), "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        log.close()
        addr = wait_until("forgeline to log its listening address", self._listen_addr, timeout=60)
        host, _, port = addr.rpartition(":")
        assert host == "127.0.0.1", f"forgeline listens on {addr}, not on 127.0.0.1"
        self.url = f"http://127.0.0.1:{port}"
        wait_until(
            "forgeline /health/ready",
            lambda: httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200,
            timeout=60,
        )
        return self

    def _listen_addr(self) -> Optional[str]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"forgeline exited with {self.proc.returncode}:\n{self.log()}")
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("message") == "forgeline listening" and rec.get("addr"):
                return str(rec["addr"])
        return None

    def token(self, sub: str, *roles: str, ttl: str = "2h") -> str:
        """A token for principal ``sub`` with ``roles``, from `forgeline token issue`."""
        cmd = [str(self.binary), "token", "issue", "--sub", sub, "--ttl", ttl, "--config", str(self.config),
               "--data-dir", str(self.data_dir)]
        for role in roles:
            cmd += ["--role", role]
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=60)
        assert out.returncode == 0, f"token issue failed: {out.stderr}"
        return out.stdout.strip()

    def admin_token(self) -> str:
        """A token with every role, principal ``admin``. (The server writes
        DATA/admin-token only when it generates its secret, not when
        FORGELINE_JWT_SECRET is set, as here.)"""
        if self._admin is None:
            self._admin = self.token("admin", "observer", "submitter", "worker", "reviewer", "review_admin")
        return self._admin

    def log(self, tail: int = 80) -> str:
        """The last lines the server logged."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM, then waits for the exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"forgeline did not stop within 60 s of SIGTERM:\n{self.log()}") from None
        return self.proc.returncode


class RecordingTransport(httpx.HTTPTransport):
    """An httpx transport that records (monotonic time, method, path, status,
    headers) of every response it got."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = super().handle_request(request)
        with self.lock:
            self.records.append({
                "sent": sent,
                "method": request.method,
                "path": request.url.path,
                "status": response.status_code,
                "headers": dict(response.headers),
            })
        return response

    def calls(self, method: str, path_suffix: str) -> list[dict[str, Any]]:
        """The recorded responses to ``method`` on paths ending in ``path_suffix``."""
        with self.lock:
            return [r for r in self.records if r["method"] == method and r["path"].endswith(path_suffix)]


class DropProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` whose open
    connections :meth:`drop_all` cuts (new ones are still accepted)."""

    def __init__(self, upstream_url: str) -> None:
        hostport = upstream_url.split("//", 1)[1]
        host, _, port = hostport.rpartition(":")
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, upstream]
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self) -> None:
        """Cuts every open connection, both ways."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        """Stops accepting and cuts every connection."""
        self.closed = True
        self.listener.close()
        self.drop_all()


def run_in_thread(target: Callable[[], Any], name: str) -> threading.Thread:
    """Starts ``target`` in a daemon thread; exceptions are kept on ``thread.error``."""
    def wrapper() -> None:
        try:
            target()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            thread.error = e  # type: ignore[attr-defined]
            raise

    thread = threading.Thread(target=wrapper, name=name, daemon=True)
    thread.error = None  # type: ignore[attr-defined]
    thread.start()
    return thread
