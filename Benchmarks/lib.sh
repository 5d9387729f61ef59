# Shared by the benchmark scripts: `source` it after setting ROOT; it runs nothing by itself.

# release_binaries NAME: sets $sotto and $bench to $SOTTO and $SOTTO_BENCH, or else to the
# release build under $ROOT/.build, built first (swift build -c release) unless both are given.
# Exits 2, naming the script NAME, when a binary is missing.
release_binaries() {
    local name=$1
    if ! command -v swift >/dev/null && [[ -x /opt/swift/usr/bin/swift ]]; then export PATH="$PATH:/opt/swift/usr/bin"; fi
    sotto=${SOTTO:-$ROOT/.build/release/sotto}
    bench=${SOTTO_BENCH:-$ROOT/.build/release/sotto-bench}
    if [[ -z "${SOTTO:-}" || -z "${SOTTO_BENCH:-}" ]]; then
        echo "$name: release build (swift build -c release)" >&2
        (cd "$ROOT" && swift build -c release --product sotto >/dev/null </dev/null \
            && swift build -c release --product sotto-bench >/dev/null </dev/null)
    fi
    [[ -x $sotto && -x $bench ]] || { echo "$name: no binaries at $sotto / $bench" >&2; exit 2; }
}

# stop_pids: stops every process whose PID is in the array `pids` (SIGTERM by PID), then waits
# for each of them.
stop_pids() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
