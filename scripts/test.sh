#!/usr/bin/env bash
# Runs every check forgeline has: formatting, lints, docs, unit and
# integration tests (including the kill -9 durability test and the soak).
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

# promtool (Debian package `prometheus`) lints the live /metrics exposition in
# the test suite. Under CI it is installed here; a missing tool is a failure,
# never a skip.
if ! command -v promtool >/dev/null 2>&1 && [ "${CI:-}" = "true" ]; then
  step "installing promtool (apt-get install prometheus)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
require promtool "apt-get install prometheus"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --release --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

step "cargo test (release build, shared with the benches)"
cargo test --release --all-targets

step "benchmark budgets (criterion, short runs; benches/budgets.toml)"
./scripts/bench-gate

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - started ))"
