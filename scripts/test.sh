#!/usr/bin/env bash
# The one test command: formatting, lints, the whole suite (unit, end-to-end,
# real-terminal and benchmark smoke tests), doctests, docs and packaging.
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

# The agent's `hooks` module exists only with `--cfg tokio_unstable`: its example runs in
# the target dir the hooks tests build their tokio_unstable fixtures in.
unstable=(--target-dir target/fixtures-unstable)
RUSTFLAGS="--cfg tokio_unstable" RUSTDOCFLAGS="--cfg tokio_unstable" \
  cargo test --quiet -p leaktop-agent --features tokio-hooks --doc "${unstable[@]}" -- hooks

# Docs build without warnings: the workspace as `cargo doc` builds it, and the agent with
# every feature as docs.rs builds it (its Cargo.toml's [package.metadata.docs.rs]).
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --workspace
RUSTFLAGS="--cfg tokio_unstable" RUSTDOCFLAGS="--cfg tokio_unstable -D warnings" \
  cargo doc --quiet --no-deps -p leaktop-agent --features metrics,stream,tokio-hooks "${unstable[@]}"

# Both crates package and build as crates.io would have them: packaged together, leaktop
# is verified against the packaged agent (not the path dependency). The tests are left
# out of the leaktop crate on purpose (they drive unpublished fixture crates).
# Cargo treats the packaged agent as a registry crate: it unpacks it into
# $CARGO_HOME/registry/src/ and builds it once per version, never noticing that its source
# changed. So a second run would verify leaktop against the agent of the first: drop the
# unpacked copies and the verification's agent build (in a target dir of its own, so the
# rest of its build stays cached).
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/leaktop-agent-[0-9]*/
verify=target/package-verify
rm -rf "$verify"/debug/.fingerprint/leaktop* "$verify"/debug/deps/*leaktop*
cargo package --quiet --allow-dirty --target-dir "$verify" -p leaktop-agent -p leaktop 2>&1 |
  { grep -vE "^warning: ignoring (test|benchmark) " || true; }
