#!/usr/bin/env bash
# leaktop benchmarks. Speed goals live here, never in timed tests.
#
#   scripts/bench.sh              run every section
#   scripts/bench.sh symbolize    run the named sections
#
# Each section is one function `bench_<name>`; add new ones beside the others and list
# them in SECTIONS. QUICK=1 asks for fewer trials where a section supports it.
set -euo pipefail
cd "$(dirname "$0")/.."

SECTIONS=(symbolize channels)

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
# --- end symbolization -------------------------------------------------------------------

# --- instrumented channels (leaktop_agent::sync) -----------------------------------------
quick_flag() {
  if [[ -n "${QUICK:-}" ]]; then echo "--quick"; fi
}

# Instrumented channels (leaktop_agent::sync) against tokio::sync: a ping-pong over two
# mpsc(1) channels (every receive waits: two messages and two Pending->Ready cycles per
# round trip) on a current-thread and a 2-worker runtime, and try_send+try_recv per
# message. Goal: ping-pong ratio <= 1.10 for the channels alone.
bench_channels() {
  echo "== channels: leaktop_agent::sync vs tokio::sync"
  # shellcheck disable=SC2046
  cargo bench --quiet -p leaktop-agent --bench channels -- $(quick_flag)
  channels_instructions
}

# Instructions per ping-pong round trip under callgrind: unlike times, these do not
# depend on how busy the machine is. Skipped without valgrind.
channels_instructions() {
  if ! command -v valgrind >/dev/null; then
    echo "(valgrind not installed: no instruction counts)"
    return
  fi
  local bin dir rounds=100000
  bin=$(cargo bench --quiet -p leaktop-agent --bench channels --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
  dir=$(mktemp -d)
  chmod 700 "$dir"
  count() { # variant rounds -> instructions
    LEAKTOP_SOCKET_DIR="$dir" LEAKTOP_BENCH_ROUNDS="$2" valgrind --tool=callgrind \
      --callgrind-out-file=/dev/null "$bin" --variant "$1" 2>&1 |
      sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
  }
  local v base full
  declare -A per
  for v in pp_tokio pp_agent pp_mixed; do
    base=$(count "$v" 1)
    full=$(count "$v" "$rounds")
    per[$v]=$(( (full - base) / (rounds - 1) ))
  done
  rm -rf "$dir"
  awk -v t="${per[pp_tokio]}" -v a="${per[pp_agent]}" -v m="${per[pp_mixed]}" 'BEGIN {
    printf "pingpong mpsc(1) current_thread  instructions per round trip: tokio %d  agent %d  ratio %.3f  channels alone %.3f\n", t, a, a / t, a / m }'
}

# --- end channels ------------------------------------------------------------------------

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
