#!/usr/bin/env bash
# leaktop benchmarks. Speed goals live here, never in timed tests.
#
#   scripts/bench.sh              run every section
#   scripts/bench.sh symbolize    run the named sections
#
# Each section is one function `bench_<name>`; add new ones beside the others and list
# them in SECTIONS.
set -euo pipefail
cd "$(dirname "$0")/.."

SECTIONS=(symbolize)

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
