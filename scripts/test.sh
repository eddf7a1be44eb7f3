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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --release --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

step "cargo test (release build, shared with the benches)"
cargo test --release --all-targets

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - started ))"
