#!/usr/bin/env bash
# leaktop benchmarks. Speed goals live here, never in timed tests (the machine is shared
# and noisy).
#
#   scripts/bench.sh                 run every section
#   scripts/bench.sh channels        run the named sections
#   QUICK=1 scripts/bench.sh         fewer trials, for a smoke run (or: --quick)
#
# Each section is one function `bench_<name>`; add new ones beside the others and list
# them in SECTIONS. A section that has a result table writes it as JSON to
# target/bench/sections/<name>.json; main() gathers those of this invocation into
# target/bench/results.json ({"<name>": {...}, ...}).
set -euo pipefail
cd "$(dirname "$0")/.."

SECTIONS=(channels locks symbolize tui record overhead)

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

# --- instrumented locks (leaktop_agent::sync::{Mutex, Semaphore}) ------------------------
# Against tokio::sync: an uncontended Mutex lock+unlock and a Semaphore acquire+release in a
# task (the agent's locks record their holder on every acquisition). Goal: ratio <= 1.10.
bench_locks() {
  echo "== locks: leaktop_agent::sync vs tokio::sync"
  # shellcheck disable=SC2046
  cargo bench --quiet -p leaktop-agent --bench locks -- $(quick_flag)
  locks_instructions
}

# Instructions per operation under callgrind (robust on a loaded machine). Skipped
# without valgrind.
locks_instructions() {
  if ! command -v valgrind >/dev/null; then
    echo "(valgrind not installed: no instruction counts)"
    return
  fi
  local bin dir ops=200000
  bin=$(cargo bench --quiet -p leaktop-agent --bench locks --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
  dir=$(mktemp -d)
  chmod 700 "$dir"
  count() { # variant ops -> instructions
    TMPDIR="$dir" LEAKTOP_BENCH_ROUNDS="$2" valgrind --tool=callgrind \
      --callgrind-out-file=/dev/null "$bin" --variant "$1" 2>&1 |
      sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
  }
  local v base full
  declare -A per
  for v in mutex_tokio mutex_agent sem_tokio sem_agent; do
    base=$(count "$v" 1)
    full=$(count "$v" "$ops")
    per[$v]=$(( (full - base) / (ops - 1) ))
  done
  rm -rf "$dir"
  awk -v mt="${per[mutex_tokio]}" -v ma="${per[mutex_agent]}" -v st="${per[sem_tokio]}" -v sa="${per[sem_agent]}" 'BEGIN {
    printf "Mutex lock+unlock       instructions per op: tokio %d  agent %d  ratio %.3f\n", mt, ma, ma / mt
    printf "Semaphore acquire+release instructions per op: tokio %d  agent %d  ratio %.3f\n", st, sa, sa / st }'
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

# --- live TUI (src/tui) ------------------------------------------------------------------
# Goals: attach -> first complete frame <= 300 ms; the TUI at a 1 s refresh on a process
# with 1 000 spawn sites (tests/fixtures/src/bin/many_sites.rs, counters churning) uses
# <= 2 % of a core. Release builds, run under tmux at 120x40.
# Knobs: LEAKTOP_BENCH_TUI_SECS (CPU sampling time, default 30), LEAKTOP_BENCH_TUI_RUNS
# (first-frame runs, default 5).
bench_tui() {
    echo "== tui"
    command -v tmux >/dev/null || { echo "tmux is needed: apt-get install -y tmux" >&2; return 2; }
    local secs="${LEAKTOP_BENCH_TUI_SECS:-30}" runs="${LEAKTOP_BENCH_TUI_RUNS:-5}"
    cargo build --release --quiet --bin leaktop
    CARGO_TARGET_DIR=target/fixtures cargo build --release --quiet -p leaktop-fixtures --bin many_sites
    local dir sock fixture_pid hz
    dir="$(mktemp -d /tmp/leaktop-bench-tui.XXXXXX)"
    chmod 700 "$dir"
    sock="leaktop-bench-tui-$$"
    hz="$(getconf CLK_TCK)"
    LEAKTOP_SOCKET_DIR="$dir" target/fixtures/release/many_sites >"$dir/fixture.out" 2>&1 &
    fixture_pid=$!
    # shellcheck disable=SC2064
    trap "tmux -L $sock kill-server 2>/dev/null || true; kill $fixture_pid 2>/dev/null || true; rm -rf '$dir'" RETURN
    for _ in $(seq 100); do grep -q ready "$dir/fixture.out" 2>/dev/null && break; sleep 0.05; done
    grep -q ready "$dir/fixture.out" || { echo "fixture did not start" >&2; return 1; }
    sleep 3 # some history for the first frame to show

    local run_tui="exec env LEAKTOP_SOCKET_DIR=$dir LEAKTOP_LOG=$dir/tui.log $PWD/target/release/leaktop $fixture_pid --interval 1s"

    # Attach -> first complete frame: the TUI logs it (from before the attach to the first
    # frame drawn with a snapshot); the wall time to the site table on the tmux screen is
    # measured from outside too (50 ms polling granularity is not good enough: 5 ms).
    local i t0 t1 internal=() external=()
    for i in $(seq "$runs"); do
        : >"$dir/tui.log"
        t0=$(date +%s%N)
        tmux -L "$sock" -f /dev/null new-session -d -x 120 -y 40 -s b "$run_tui"
        until tmux -L "$sock" capture-pane -p -t b 2>/dev/null | grep -q "many_sites.rs:"; do
            sleep 0.005
            (( $(date +%s%N) - t0 > 10000000000 )) && { echo "no frame after 10 s" >&2; return 1; }
        done
        t1=$(date +%s%N)
        external+=("$(( (t1 - t0) / 1000000 ))")
        for _ in $(seq 200); do grep -q "first complete frame" "$dir/tui.log" && break; sleep 0.01; done
        internal+=("$(grep -o 'first complete frame [0-9]* ms' "$dir/tui.log" | grep -o '[0-9]*')")
        tmux -L "$sock" send-keys -t b q
        sleep 0.2
        tmux -L "$sock" kill-server 2>/dev/null || true
    done
    echo "attach -> first complete frame (in-process, ms): ${internal[*]}   (goal <= 300)"
    echo "launch -> site table on screen (tmux, ms):        ${external[*]}"

    # CPU at a 1 s refresh: user+system ticks of the TUI process over $secs seconds,
    # after a 5 s warm-up.
    tmux -L "$sock" -f /dev/null new-session -d -x 120 -y 40 -s b "$run_tui"
    local tui_pid a b
    tui_pid="$(tmux -L "$sock" display-message -p -t b '#{pane_pid}')"
    sleep 5
    a=$(awk '{print $14 + $15}' "/proc/$tui_pid/stat")
    sleep "$secs"
    b=$(awk '{print $14 + $15}' "/proc/$tui_pid/stat")
    local sites
    sites="$(tmux -L "$sock" capture-pane -p -t b | grep -o 'Sites [0-9,]*' | head -1)"
    tmux -L "$sock" send-keys -t b q
    awk -v a="$a" -v b="$b" -v hz="$hz" -v s="$secs" -v sites="$sites" \
        'BEGIN { printf "TUI CPU at 1 s refresh, %s: %.2f %% of a core over %d s (goal <= 2 %%)\n", sites, (b - a) * 100 / hz / s, s }'
}
# --- end live TUI ------------------------------------------------------------------------

# --- recording (src/record) ---------------------------------------------------------------
# Goals: a 1 000-site process recorded at 1 s stays under 100 KB/min of snapshots; opening
# and folding a 10-minute recording (a backward seek) takes well under a second. Records
# the many_sites fixture for LEAKTOP_BENCH_RECORD_SECS (default 60), then times dumps.
bench_record() {
    echo "== record"
    local secs="${LEAKTOP_BENCH_RECORD_SECS:-60}"
    cargo build --release --quiet --bin leaktop
    CARGO_TARGET_DIR=target/fixtures cargo build --release --quiet -p leaktop-fixtures --bin many_sites
    local dir fixture_pid
    dir="$(mktemp -d /tmp/leaktop-bench-record.XXXXXX)"
    chmod 700 "$dir"
    LEAKTOP_SOCKET_DIR="$dir" target/fixtures/release/many_sites >"$dir/fixture.out" 2>&1 &
    fixture_pid=$!
    # shellcheck disable=SC2064
    trap "kill $fixture_pid 2>/dev/null || true; rm -rf '$dir'" RETURN
    for _ in $(seq 100); do grep -q ready "$dir/fixture.out" 2>/dev/null && break; sleep 0.05; done
    LEAKTOP_SOCKET_DIR="$dir" target/release/leaktop record "$fixture_pid" -o "$dir/s.ltrec" \
        --duration "${secs}s" --interval 1s
    local t0 t1
    t0=$(date +%s%N)
    target/release/leaktop dump "$dir/s.ltrec" >/dev/null
    t1=$(date +%s%N)
    echo "open + fold the whole recording: $(( (t1 - t0) / 1000000 )) ms"
    t0=$(date +%s%N)
    target/release/leaktop dump "$dir/s.ltrec" --at 50% >/dev/null
    t1=$(date +%s%N)
    echo "open + fold to the middle: $(( (t1 - t0) / 1000000 )) ms"
}
# --- end recording -------------------------------------------------------------------------

# --- overhead and scale (tests/bench, issue 10) ------------------------------------------
# The same tokio workloads (2 worker threads) three ways in one run: plain tokio,
# leaktop-agent (agent started, a client streaming snapshots every 1 s) and tokio-console's
# console-subscriber (tokio built with --cfg tokio_unstable, a gRPC client streaming
# updates). Every measurement is a fresh process; runs alternate the variants' order;
# cells are the median of the runs with their spread and the ratio to plain tokio from
# the same run. Workloads: 1 spawn storm 200k, 2 ping-pong mpsc(1) 100k, 3 fan-in
# 200x2000 into mpsc(256), 4 park 100k tasks on their own channels, 5 scale: 1M parked
# tasks in 50 groups, 6 attach: `leaktop dump <pid>` with 100k live tasks.
# Goals (agent): <= 1.10x plain on 1-4; <= +128 B per blocked task; at 1M tasks a snapshot
# builds in <= 10 ms and encodes to <= 64 KiB. The table marks each ok/MISS; the section
# fails (exit 1) when a goal is missed.
# Knobs: LEAKTOP_BENCH_RUNS (default 5), LEAKTOP_BENCH_WORKLOADS (e.g. spawn,park),
# LEAKTOP_BENCH_CONSOLE=0 (skip the console-subscriber build and variant),
# LEAKTOP_BENCH_CALLGRIND=1 (also count instructions per op under valgrind's callgrind,
# robust on a loaded machine: apt-get install -y valgrind).
bench_overhead() {
    echo "== overhead"
    cargo build --release --quiet -p leaktop -p leaktop-bench --bin leaktop --bin leaktop-bench
    local args=(suite --leaktop target/release/leaktop --out target/bench/sections/overhead.json)
    if [[ "${LEAKTOP_BENCH_CONSOLE:-1}" != 0 ]]; then
        # Its own target dir: --cfg tokio_unstable would otherwise rebuild everything else.
        RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/bench-console \
            cargo build --release --quiet -p leaktop-bench --features console
        args+=(--console-exe target/bench-console/release/leaktop-bench)
    fi
    [[ -n "${QUICK:-}" ]] && args+=(--quick)
    [[ -n "${LEAKTOP_BENCH_RUNS:-}" ]] && args+=(--runs "$LEAKTOP_BENCH_RUNS")
    [[ -n "${LEAKTOP_BENCH_WORKLOADS:-}" ]] && args+=(--workloads "$LEAKTOP_BENCH_WORKLOADS")
    [[ "${LEAKTOP_BENCH_CALLGRIND:-0}" == 1 ]] && args+=(--callgrind)
    target/release/leaktop-bench "${args[@]}"
}
# --- end overhead --------------------------------------------------------------------------

# Gathers the section tables of this invocation into target/bench/results.json.
write_results() {
    local files=() f name sep=""
    for name in "$@"; do
        f="target/bench/sections/$name.json"
        [[ -f "$f" ]] && files+=("$f")
    done
    [[ ${#files[@]} -eq 0 ]] && return 0
    {
        echo "{"
        for f in "${files[@]}"; do
            name="$(basename "$f" .json)"
            printf '%s"%s": ' "$sep" "$name"
            cat "$f"
            sep=","
        done
        echo "}"
    } >target/bench/results.json
    echo "results: target/bench/results.json"
}

main() {
  local sections=() failed=0 a s
  for a in "$@"; do
    case "$a" in
      --quick) export QUICK=1 ;;
      *) sections+=("$a") ;;
    esac
  done
  if [[ ${#sections[@]} -eq 0 ]]; then
    sections=("${SECTIONS[@]}")
  fi
  for s in "${sections[@]}"; do
    if ! declare -F "bench_$s" >/dev/null; then
      echo "unknown bench section '$s' (known: ${SECTIONS[*]})" >&2
      exit 2
    fi
  done
  mkdir -p target/bench/sections
  for s in "${sections[@]}"; do
    rm -f "target/bench/sections/$s.json"
    # A section that misses a goal says so and the others still run. (A subshell outside
    # any `||`, so `set -e` still stops the section at its first error.)
    set +e
    (set -e; "bench_$s")
    [[ $? -ne 0 ]] && failed=1
    set -e
  done
  write_results "${sections[@]}"
  return "$failed"
}

main "$@"
