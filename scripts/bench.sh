#!/usr/bin/env bash
# leaktop benchmarks. Speed goals live here, never in timed tests.
#
#   scripts/bench.sh                     run every section
#   scripts/bench.sh symbolize overhead  run the named sections
#   scripts/bench.sh --quick overhead    tiny sizes, one run: does it work (not for numbers)
#
# Each section is one function `bench_<name>`; add new ones beside the others and list
# them in SECTIONS. A section that has a result table writes it as JSON to
# target/bench/sections/<name>.json; main() gathers those of this invocation into
# target/bench/results.json ({"<name>": {...}, ...}).
set -euo pipefail
cd "$(dirname "$0")/.."

SECTIONS=(symbolize overhead)
QUICK=0

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
    [[ "$QUICK" == 1 ]] && args+=(--quick)
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
    local sections=() failed=0
    for a in "$@"; do
        case "$a" in
            --quick) QUICK=1 ;;
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
        # A section that misses a goal says so and the others still run. (A subshell
        # outside any `||`, so `set -e` still stops the section at its first error.)
        set +e
        (set -e; "bench_$s")
        [[ $? -ne 0 ]] && failed=1
        set -e
    done
    write_results "${sections[@]}"
    return "$failed"
}

main "$@"
