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

# bench_options NAME SCRIPT HELP_END [ARGS...]: the options run.sh and tor-bench.sh share. Sets
# QUICK, SCRATCH (default $ROOT/.build), SKIP_BUILD, RESULTS_COPY and KEEP; --help prints lines
# 2 to HELP_END of SCRIPT's header; anything else exits 2 naming NAME.
bench_options() {
    local name=$1 script=$2 help_end=$3
    shift 3
    QUICK=0 SCRATCH="$ROOT/.build" SKIP_BUILD=0 RESULTS_COPY="" KEEP=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --quick) QUICK=1 ;;
            --scratch-path|--results)
                [[ $# -ge 2 && -n $2 ]] || { echo "$name: $1 needs a value (see --help)" >&2; exit 2; }
                if [[ $1 == --results ]]; then RESULTS_COPY=$2; else SCRATCH=$2; fi
                shift ;;
            --skip-build) SKIP_BUILD=1 ;;
            --keep) KEEP=1 ;;
            -h|--help) sed -n "2,${help_end}p" "$script" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) echo "$name: unknown option '$1' (see --help)" >&2; exit 2 ;;
        esac
        shift
    done
}

# stop_pid PID: SIGTERM, up to STOP_GRACE_TENTHS tenths of a second (default 30) to go, then
# SIGKILL (a process started with SIGTERM blocked, an inherited mask, only goes with that); waits.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 "${STOP_GRACE_TENTHS:-30}"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# forget_pid PID: drops PID from the array PIDS (once it was stopped some other way).
forget_pid() {
    local pid=$1 kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    PIDS=("${kept[@]+"${kept[@]}"}")
}
