#!/usr/bin/env bash
# Benchmarks: speed goals live here, never in timed tests (the machine is shared and
# noisy). Each area has its own function; run all, or name some:
#   scripts/bench.sh                 # everything
#   scripts/bench.sh channels        # one area
#   QUICK=1 scripts/bench.sh         # fewer trials, for a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

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
}

all=(channels)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then targets=("${all[@]}"); fi
for t in "${targets[@]}"; do
  "bench_$t"
done
