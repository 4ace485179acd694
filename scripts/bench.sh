#!/usr/bin/env bash
# leaktop benchmarks. Speed goals live here, never in timed tests (the machine is shared
# and noisy).
#
#   scripts/bench.sh                 run every section
#   scripts/bench.sh channels        run the named sections
#   QUICK=1 scripts/bench.sh         fewer trials, for a smoke run
#
# Each section is one function `bench_<name>`; add new ones beside the others and list
# them in SECTIONS.
set -euo pipefail
cd "$(dirname "$0")/.."

SECTIONS=(channels symbolize)

quick_flag() {
  if [[ -n "${QUICK:-}" ]]; then echo "--quick"; fi
}

# --- instrumented channels (leaktop_agent::sync) ------------------------------------------
# Against tokio::sync: a ping-pong over two mpsc(1) channels (every receive waits: two
# messages and two Pending->Ready cycles per round trip) on a current-thread and a
# 2-worker runtime, and try_send+try_recv per message. Goal: ping-pong ratio <= 1.10.
bench_channels() {
  echo "== channels: leaktop_agent::sync vs tokio::sync"
  # shellcheck disable=SC2046
  cargo bench --quiet -p leaktop-agent --bench channels -- $(quick_flag)
}

# --- symbolization (src/symbolize) -------------------------------------------------------
# Goals: cold load of a ~50 MB binary with debug info <= 500 ms; warm resolution
# >= 100 000 frames/s. Measured on the leaktop debug binary (override with
# LEAKTOP_BENCH_BINARY=/path/to/elf).
bench_symbolize() {
  echo "== symbolize"
  local bin="${LEAKTOP_BENCH_BINARY:-}"
  if [[ -z "$bin" ]]; then
    cargo build --quiet --bin leaktop
    bin="target/debug/leaktop"
  fi
  cargo bench --quiet --bench symbolize -- "$bin"
}

main() {
  local sections=("$@")
  if [[ ${#sections[@]} -eq 0 ]]; then
    sections=("${SECTIONS[@]}")
  fi
  for s in "${sections[@]}"; do
    if ! declare -F "bench_$s" >/dev/null; then
      echo "unknown bench section '$s' (known: ${SECTIONS[*]})" >&2
      exit 2
    fi
    "bench_$s"
  done
}

main "$@"
