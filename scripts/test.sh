#!/usr/bin/env bash
# The one test command: formatting, lints, and the whole suite (unit, end-to-end,
# real-terminal and benchmark smoke tests).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  # Tests that need root show as ignored (with their reason) otherwise.
  if [ "$(id -u)" = 0 ]; then
    cargo nextest run --workspace --no-fail-fast --run-ignored ignored-only -E 'test(/as_root_/)' "$@"
  fi
  # nextest does not run doctests.
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast "$@"
fi
