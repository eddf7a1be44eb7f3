"""`pip install forgeline`, as a user does it: build the wheel and the sdist
from this checkout, install the wheel into a fresh virtual environment, and
from that environment alone run the binary and the SDK.

What it checks (the issue's "done when"):
- the wheel holds the native `forgeline` executable and the typed `forgeline`
  package (`py.typed`), with complete metadata; the sdist holds what a build
  needs and no test keys or fixtures;
- `forgeline --version` names the version, commit and profile that
  `forgeline_build_info` reports;
- `forgeline export --out DIR all` writes the repository's ops kit byte for
  byte;
- `forgeline serve` on a loopback port in a temp dir, a token from
  `forgeline token issue`, and a worker written with the SDK that completes
  100 tasks submitted with the SDK's client; SIGTERM stops the server with
  exit status 0.

Needs maturin (pip) and network access to PyPI for httpx in the new virtual
environment: ./scripts/test.sh installs maturin. cargo reuses target/, so
the wheel build only relinks the binary.

Run: python3 -m pytest tests/packaging -q
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
KIT_DIRS = ("alerts", "dashboards", "loadtest", "packaging")
TIMEOUT = 60.0


def run(cmd: list[str], *, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without FORGELINE_* or virtualenv leftovers, so the
    installed environment is all that is used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGELINE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def maturin() -> str:
    path = shutil.which("maturin")
    if path is None:
        raise AssertionError("missing tool: maturin (pip install maturin); the packaging tests do not skip")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and the sdist, built from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    # The wheel's binary is the one the rest of the test command tests, only
    # stripped: same target dir, same profile.
    run([maturin(), "build", "--release", "--out", str(out)], cwd=REPO)
    run([maturin(), "sdist", "--out", str(out)], cwd=REPO)
    wheels = list(out.glob("forgeline-*.whl"))
    sdists = list(out.glob("forgeline-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="module")
def venv(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed."""
    root = tmp_path_factory.mktemp("venv") / "env"
    run([sys.executable, "-m", "venv", str(root)])
    run([str(root / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(built["wheel"])],
        env=clean_env())
    return root


def cargo_version() -> str:
    text = (REPO / "Cargo.toml").read_text()
    m = re.search(r'^version = "([^"]+)"', text, re.M)
    assert m, "Cargo.toml has a version"
    return m.group(1)


def test_the_wheel_holds_the_binary_and_the_typed_sdk_with_complete_metadata(built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as z:
        names = z.namelist()
        version = cargo_version()
        assert f"forgeline-{version}.data/scripts/forgeline" in names
        assert "forgeline/__init__.py" in names and "forgeline/py.typed" in names
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
        info = z.getinfo(f"forgeline-{version}.data/scripts/forgeline")
        assert (info.external_attr >> 16) & 0o111, "the binary is executable"
    assert meta["Name"] == "forgeline"
    assert meta["Version"] == version, "the version comes from Cargo.toml"
    assert meta["Summary"] and meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] and meta.get_all("Requires-Dist")
    assert meta["Description-Content-Type"].startswith("text/markdown")
    assert "# forgeline" in meta.get_payload(), "the README is the long description"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Repository", "Changelog"} <= set(urls), urls
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Programming Language :: Rust" in classifiers
    licenses = {n.rsplit("/", 1)[1] for n in names if ".dist-info/licenses/" in n}
    assert {"LICENSE", "NOTICE"} <= licenses


def test_the_sdist_holds_what_a_build_needs_and_no_test_keys(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for must in ["Cargo.toml", "Cargo.lock", "pyproject.toml", "build.rs", "src/main.rs", "src/lib.rs",
                 "python/forgeline/__init__.py", "python/forgeline/py.typed", "docs/openapi.yaml",
                 "alerts/forgeline.rules.yml", "dashboards/overview.json", "loadtest/smoke.js",
                 "packaging/forgeline.service", "README.md", "LICENSE", "NOTICE"]:
        assert must in names, f"the sdist lacks {must}"
    leaked = sorted(n for n in names if n.startswith(("tests/", "target/", "loadtest/results/")))
    assert leaked == [], f"the sdist ships test data or build output: {leaked[:10]}"


@pytest.fixture(scope="module")
def server(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`forgeline serve` from the virtual environment on 127.0.0.1, port 0."""
    tmp = tmp_path_factory.mktemp("server")
    data = tmp / "data"
    log_path = tmp / "forgeline.log"
    binary = venv / "bin" / "forgeline"
    env = clean_env(FORGELINE_LOG__FORMAT="json", RUST_LOG="info")
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(binary), "serve", "--port", "0", "--data-dir", str(data)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        addr = None
        deadline = time.monotonic() + TIMEOUT
        while addr is None:
            for line in log_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("message") == "forgeline listening":
                    addr = entry["addr"]
            if addr is None:
                assert proc.poll() is None, f"forgeline exited {proc.returncode}:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"no listening line:\n{log_path.read_text()}"
                time.sleep(0.05)
        host, _, port = addr.rpartition(":")
        assert host == "127.0.0.1", f"the default bind is loopback, got {addr}"
        url = f"http://127.0.0.1:{port}"
        yield {"url": url, "data": data, "proc": proc, "log": log_path, "binary": binary}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_version_matches_the_build_info_metric(venv: Path, server: dict) -> None:
    out = run([str(venv / "bin" / "forgeline"), "--version"], env=clean_env()).stdout.strip()
    m = re.fullmatch(r"forgeline (\S+) \(commit ([0-9a-f]{12}|unknown|\S+), (release|debug) build\)", out)
    assert m, out
    version, commit, profile = m.groups()
    assert version == cargo_version() and profile == "release"
    with urllib.request.urlopen(server["url"] + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    line = next(line for line in metrics.splitlines() if line.startswith("forgeline_build_info{"))
    for label, value in (("version", version), ("commit", commit), ("profile", profile)):
        assert f'{label}="{value}"' in line, (line, label, value)


def test_export_all_from_the_installed_binary_is_the_repositorys_kit(venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "kit"
    run([str(venv / "bin" / "forgeline"), "export", "--out", str(out), "all"], env=clean_env())
    exported = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    repo = {}
    for d in KIT_DIRS:
        for p in (REPO / d).rglob("*"):
            rel = p.relative_to(REPO).as_posix()
            if p.is_file() and not rel.startswith("loadtest/results/"):
                repo[rel] = p.read_bytes()
    assert sorted(exported) == sorted(repo)
    different = [k for k in repo if exported[k] != repo[k]]
    assert different == [], f"exported files differ from the repository's: {different}"


WORKER_APP = '''
"""Submit 100 tasks with the SDK's client and complete them with its worker."""
import json
import os
import sys

import forgeline

N = 100
client = forgeline.Client(os.environ["FORGELINE_URL"], os.environ["FORGELINE_TOKEN"])
ids = [client.submit({"n": i}, queue="install", labels={"run": "pip"}).id for i in range(N)]

worker = forgeline.Worker(client, "install", concurrency=4)

@worker.handler
def double(ctx: forgeline.TaskContext) -> dict:
    with ctx.verification("double"):
        n = ctx.payload["n"]
    return {"double": 2 * n}

worker.run(install_signal_handlers=False, burst=True)
tasks = [client.get_task(i) for i in ids]
print(json.dumps({
    "sdk": forgeline.__file__,
    "version": forgeline.__version__,
    "states": sorted({t.state for t in tasks}),
    "wrong": [t.id for t in tasks if t.result != {"double": 2 * t.payload["n"]}],
    "completed": worker.stats.completed,
}))
client.close()
'''


def test_an_sdk_worker_in_the_new_environment_completes_100_tasks_then_sigterm_exits_0(
    venv: Path, server: dict, tmp_path: Path
) -> None:
    token = run([str(venv / "bin" / "forgeline"), "token", "issue", "--sub", "pip-user",
                 "--role", "submitter", "--role", "worker", "--role", "observer",
                 "--ttl", "10m", "--data-dir", str(server["data"])], env=clean_env()).stdout.strip()
    assert token.count(".") == 2, "a JWT"
    app = tmp_path / "app.py"
    app.write_text(WORKER_APP)
    # Run from an empty directory: only the virtual environment provides `forgeline`.
    out = run([str(venv / "bin" / "python"), str(app)], cwd=tmp_path, timeout=300,
              env=clean_env(FORGELINE_URL=server["url"], FORGELINE_TOKEN=token)).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert Path(result["sdk"]).resolve().is_relative_to(venv.resolve()), result["sdk"]
    assert result["version"] == cargo_version()
    assert result["states"] == ["completed"], result
    assert result["wrong"] == [], result
    assert result["completed"] == 100, result

    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"forgeline did not stop on SIGTERM:\n{server['log'].read_text()[-4000:]}")
    assert code == 0, f"forgeline exited {code} on SIGTERM:\n{server['log'].read_text()[-4000:]}"
