"""packaging/forgeline.service, checked by systemd's own tools.

`systemd-analyze verify` loads the unit the way systemd would (directives,
values, the ExecStart binary); `systemd-analyze security --offline=true`
scores its sandboxing. Both come from Debian's `systemd` package, which
./scripts/test.sh installs under CI; a missing tool fails, never skips.

The unit names /usr/local/bin/forgeline (where `sudo pip install` puts it).
verify checks that the ExecStart binary exists, so it runs on a copy whose
ExecStart points at the release binary the test command built; nothing else
in the copy differs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
UNIT = REPO / "packaging" / "forgeline.service"
INSTALLED_PATH = "/usr/local/bin/forgeline"
# The exposure docs/install.md records; a change that weakens the sandbox
# past it fails here (lower is better; systemd calls < 2 "OK").
MAX_EXPOSURE = 1.5


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise AssertionError("missing tool: systemd-analyze (apt-get install systemd); the tests do not skip")
    return path


def binary() -> Path:
    path = Path(os.environ.get("FORGELINE_BIN") or REPO / "target" / "release" / "forgeline")
    assert path.is_file(), f"missing forgeline binary {path}: build it first"
    return path


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_PATH} " in text
    copy = tmp_path / "forgeline.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_PATH} ", f"ExecStart={binary()} ", 1))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(unit_copy: Path) -> None:
    out = subprocess.run([systemd_analyze(), "verify", "--man=no", str(unit_copy)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "forgeline.service" not in out.stderr, out.stderr


def test_the_security_score_stays_at_what_install_md_records(unit_copy: Path) -> None:
    out = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit_copy)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    m = re.search(r"Overall exposure level for forgeline\.service: (\d+\.\d+)", out.stdout)
    assert m, out.stdout[-2000:]
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{out.stdout}"
    recorded = (REPO / "docs" / "install.md").read_text()
    assert f"exposure level **{m.group(1)}**" in recorded, (
        f"docs/install.md should record the score systemd-analyze gives today ({m.group(1)})"
    )


def test_the_unit_is_hardened_and_outwaits_the_drain() -> None:
    d = directives()
    for key, value in {
        "DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        "StateDirectory": "forgeline", "KillSignal": "SIGTERM",
    }.items():
        assert d.get(key) == [value], f"{key}={value} (found {d.get(key)})"
    assert any(v.startswith("@system-service") for v in d["SystemCallFilter"])
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    # forgeline drains for server.shutdown_timeout (30 s by default) after
    # SIGTERM; systemd must not SIGKILL it before.
    stop = d["TimeoutStopSec"][0]
    seconds = int(stop.removesuffix("s"))
    config = (REPO / "docs" / "configuration.md").read_text()
    drain = re.search(r"\| `server\.shutdown_timeout` \| `\"(\d+)s\"` \|", config)
    assert drain, "docs/configuration.md documents server.shutdown_timeout"
    assert seconds > int(drain.group(1)), f"TimeoutStopSec={stop} must exceed the {drain.group(1)} s drain"
