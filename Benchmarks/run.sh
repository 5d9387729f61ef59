#!/usr/bin/env bash
# Sotto vs shadowsocks-libev vs no proxy, side by side on loopback (issue 2).
#
#   UDP echo round trip (p50, p99) and loss-free datagram rate through SOCKS5 UDP ASSOCIATE,
#   TCP throughput through SOCKS5 CONNECT, and the proxies' resident memory idle and with
#   1,000 active UDP flows. Sotto runs with anonymizer "none" and shaping "off"; shadowsocks-libev
#   (Debian package) runs ss-local -u -> ss-server -u with chacha20-ietf-poly1305.
#
# Usage: Benchmarks/run.sh [--quick] [--scratch-path DIR] [--skip-build] [--results FILE] [--keep]
#   --quick          short windows and transfers: a smoke run of a minute or two, not a benchmark
#   --scratch-path   SwiftPM build folder (default: .build in the repository)
#   --skip-build     use the release binaries already in the scratch path
#   --results FILE   also write the raw RESULT lines there
#   --keep           keep the temporary folder (configs, logs) and print its path
# Knobs (environment): CELL_SIZE (514, Sotto's tunnel cell size), SIZE (1200), COUNT (2000), WINDOW (2), TCP_BYTES (256M), TCP_REPEAT (5),
#   FLOWS (1000), HOLD (10).
#
# Everything listens on 127.0.0.1 on ports picked free at start. Every process this script starts
# is stopped by its PID on exit. Exit status: 0 when every measurement ran, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/Benchmarks/lib.sh"
bench_options run.sh "$0" 20 "$@"

: "${CELL_SIZE:=514}"
if [[ $QUICK == 1 ]]; then
    : "${SIZE:=1200}" "${COUNT:=300}" "${WINDOW:=0.5}" "${TCP_BYTES:=32M}" "${TCP_REPEAT:=3}" "${FLOWS:=1000}" "${HOLD:=3}"
else
    : "${SIZE:=1200}" "${COUNT:=2000}" "${WINDOW:=2}" "${TCP_BYTES:=256M}" "${TCP_REPEAT:=5}" "${FLOWS:=1000}" "${HOLD:=10}"
fi

say() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- build and tools

if [[ $SKIP_BUILD == 0 ]]; then
    say "building release (sotto, sotto-bench) in $SCRATCH"
    # SwiftPM honours only the last --product, so one build each.
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product sotto-bench)
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product sotto) \
        || say "building sotto failed: the Sotto column will be empty"
fi
BIN=$(cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --show-bin-path)
BENCH="$BIN/sotto-bench"
SOTTO="$BIN/sotto"
[[ -x $BENCH ]] || { echo "run.sh: $BENCH is missing; build first (drop --skip-build)" >&2; exit 1; }

if ! command -v ss-server >/dev/null || ! command -v ss-local >/dev/null; then
    say "installing shadowsocks-libev (Debian package)"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y shadowsocks-libev
fi

# 1,000 flows cost the client and each gateway about 2,000 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- processes

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sotto-bench.XXXXXX")
RESULTS="$WORK/results.txt"
: >"$RESULTS"
declare -a PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
    if [[ $KEEP == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs it in the background, logs to $WORK/NAME.log, sets LAST_PID.
start() {
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop() {
    stop_pid "$1"
    forget_pid "$1"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo ""; }

alive() { kill -0 "$1" 2>/dev/null; }

mapfile -t PORTS < <("$BENCH" free-ports --count 6)
[[ ${#PORTS[@]} -eq 6 ]] || { echo "run.sh: could not find 6 free loopback ports" >&2; exit 1; }
ECHO_PORT=${PORTS[0]} SINK_PORT=${PORTS[1]} SS_PORT=${PORTS[2]} SS_LOCAL_PORT=${PORTS[3]}
EXIT_PORT=${PORTS[4]} SOCKS_PORT=${PORTS[5]}

start udp-echo "$BENCH" udp-echo --listen "127.0.0.1:$ECHO_PORT" --lifetime 7200
start tcp-sink "$BENCH" tcp-sink --listen "127.0.0.1:$SINK_PORT" --lifetime 7200
"$BENCH" wait-listen --udp "127.0.0.1:$ECHO_PORT" --timeout 10
"$BENCH" wait-listen --tcp "127.0.0.1:$SINK_PORT" --timeout 10

SS_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
SS_PIDS=()
start_shadowsocks() {
    start ss-server ss-server -s 127.0.0.1 -p "$SS_PORT" -k "$SS_PASSWORD" -m chacha20-ietf-poly1305 -u
    SS_SERVER_PID=$LAST_PID
    start ss-local ss-local -s 127.0.0.1 -p "$SS_PORT" -b 127.0.0.1 -l "$SS_LOCAL_PORT" \
        -k "$SS_PASSWORD" -m chacha20-ietf-poly1305 -u
    SS_LOCAL_PID=$LAST_PID
    SS_PIDS=("$SS_LOCAL_PID" "$SS_SERVER_PID")
    "$BENCH" wait-listen --tcp "127.0.0.1:$SS_PORT" --timeout 15
    "$BENCH" wait-listen --tcp "127.0.0.1:$SS_LOCAL_PORT" --timeout 15
}
stop_shadowsocks() { local p; for p in "${SS_PIDS[@]}"; do stop "$p"; done; SS_PIDS=(); }

# Sotto: keys from `sotto keygen`, an exit gateway exposing the echo (udp 7) and the sink (tcp 9),
# an entry gateway with a SOCKS server and the exit as peer "exit". No anonymizer, no shaping.
SOTTO_STATUS="not started"
SOTTO_PIDS=()
write_sotto_configs() {
    [[ -x $SOTTO ]] || { SOTTO_STATUS="no sotto binary at $SOTTO"; return 1; }
    if ! "$SOTTO" keygen >"$WORK/keys.txt" 2>"$WORK/keygen.log"; then
        SOTTO_STATUS="'sotto keygen' failed: $(head -c 300 "$WORK/keygen.log")"
        return 1
    fi
    local private public psk
    private=$(sed -n 's/^private_key *= *"\(.*\)"$/\1/p' "$WORK/keys.txt")
    public=$(sed -n 's/^public_key *= *"\(.*\)"$/\1/p' "$WORK/keys.txt")
    psk=$(sed -n 's/^psk *= *"\(.*\)"$/\1/p' "$WORK/keys.txt")
    if [[ -z $private || -z $public || -z $psk ]]; then
        SOTTO_STATUS="'sotto keygen' printed no private_key/public_key/psk lines"
        return 1
    fi
    mkdir -p "$WORK/exit-state" "$WORK/entry-state"
    chmod 700 "$WORK/exit-state" "$WORK/entry-state"
    cat >"$WORK/exit.toml" <<EOF
state_dir = "$WORK/exit-state"
log_level = "warning"

[[profile]]
name = "bench"
anonymizer = "none"
shaping = "off"
default = true

[[service]]
name = "bench"
listen = "127.0.0.1:$EXIT_PORT"
private_key = "$private"
psk = "$psk"
# 1,000 UDP flows share the one tunnel of the memory measurement.
max_flows_per_tunnel = 4096
cell_size = $CELL_SIZE
expose = ["udp 7 127.0.0.1:$ECHO_PORT", "tcp 9 127.0.0.1:$SINK_PORT"]
EOF
    cat >"$WORK/entry.toml" <<EOF
state_dir = "$WORK/entry-state"
log_level = "warning"

[socks]
listen = "127.0.0.1:$SOCKS_PORT"
# One control connection per UDP flow.
max_connections = 4096

[[profile]]
name = "bench"
anonymizer = "none"
shaping = "off"
default = true

[[peer]]
name = "exit"
address = "127.0.0.1:$EXIT_PORT"
public_key = "$public"
psk = "$psk"
cell_size = $CELL_SIZE
EOF
    chmod 600 "$WORK/exit.toml" "$WORK/entry.toml"
}

start_sotto() {
    start sotto-exit "$SOTTO" run --config "$WORK/exit.toml"
    SOTTO_EXIT_PID=$LAST_PID
    start sotto-entry "$SOTTO" run --config "$WORK/entry.toml"
    SOTTO_ENTRY_PID=$LAST_PID
    SOTTO_PIDS=("$SOTTO_ENTRY_PID" "$SOTTO_EXIT_PID")
    if ! "$BENCH" wait-listen --tcp "127.0.0.1:$EXIT_PORT" --timeout 20 2>/dev/null \
        || ! "$BENCH" wait-listen --tcp "127.0.0.1:$SOCKS_PORT" --timeout 20 2>/dev/null \
        || ! alive "$SOTTO_EXIT_PID" || ! alive "$SOTTO_ENTRY_PID"; then
        SOTTO_STATUS="the gateways did not come up: exit log: $(tail -c 300 "$WORK/sotto-exit.log" | tr '\n' ' ') entry log: $(tail -c 300 "$WORK/sotto-entry.log" | tr '\n' ' ')"
        stop_sotto
        return 1
    fi
    SOTTO_STATUS="running"
}
stop_sotto() { local p; for p in "${SOTTO_PIDS[@]+"${SOTTO_PIDS[@]}"}"; do stop "$p"; done; SOTTO_PIDS=(); }

# ---------------------------------------------------------------- measurements

FAILED=()

# measure LABEL PATH-ARGS... -- UDP-TARGET TCP-TARGET
measure() {
    local label=$1; shift
    local args=()
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    local udp_target=$1 tcp_target=$2
    say "$label: UDP round trip and loss-free rate"
    if ! "$BENCH" udp "${args[@]}" --target "$udp_target" --label "$label" \
        --size "$SIZE" --count "$COUNT" --window "$WINDOW" | tee -a "$RESULTS"; then
        FAILED+=("$label udp")
    fi
    say "$label: TCP throughput"
    if ! "$BENCH" tcp "${args[@]}" --target "$tcp_target" --label "$label" \
        --bytes "$TCP_BYTES" --repeat "$TCP_REPEAT" | tee -a "$RESULTS"; then
        FAILED+=("$label tcp")
    fi
}

# memory LABEL ENTRY-PID EXIT-PID PATH-ARGS... -- UDP-TARGET: RSS idle, then with $FLOWS flows.
memory() {
    local label=$1 first=$2 second=$3; shift 3
    local args=()
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    local target=$1
    sleep 1
    echo "MEMORY label=$label phase=idle first_kib=$(rss_kib "$first") second_kib=$(rss_kib "$second")" >>"$RESULTS"
    say "$label: $FLOWS UDP flows for $HOLD s"
    local out="$WORK/$label-flows.out"
    "$BENCH" udp "${args[@]}" --target "$target" --label "$label" --size 64 \
        --flows "$FLOWS" --hold "$HOLD" --time-limit 600 >"$out" 2>"$WORK/$label-flows.err" &
    local flows_pid=$!
    PIDS+=("$flows_pid")
    local i ready=0
    for i in $(seq 1 1200); do
        if grep -q '^FLOWS_READY' "$out"; then ready=1; break; fi
        alive "$flows_pid" || break
        sleep 0.1
    done
    local peak_first=0 peak_second=0 r
    if [[ $ready == 1 ]]; then
        # The peak over the hold: the flows are all up from here until the client stops.
        while alive "$flows_pid"; do
            r=$(rss_kib "$first"); [[ -n $r && $r -gt $peak_first ]] && peak_first=$r
            r=$(rss_kib "$second"); [[ -n $r && $r -gt $peak_second ]] && peak_second=$r
            sleep 0.5
        done
    fi
    if ! wait "$flows_pid"; then FAILED+=("$label flows"); fi
    forget_pid "$flows_pid"
    grep -E '^(RESULT|FLOWS_READY)' "$out" | tee -a "$RESULTS" >&2 || true
    [[ $ready == 1 ]] || { say "$label: the flows never came up: $(tail -c 400 "$WORK/$label-flows.err")"; return 1; }
    echo "MEMORY label=$label phase=flows first_kib=$peak_first second_kib=$peak_second" >>"$RESULTS"
}

# Memory first, each proxy freshly started, then restarted fresh for the speed runs so that
# neither figure carries the other's leftovers.
start_shadowsocks
memory shadowsocks "$SS_LOCAL_PID" "$SS_SERVER_PID" --socks "127.0.0.1:$SS_LOCAL_PORT" -- "127.0.0.1:$ECHO_PORT" \
    || FAILED+=("shadowsocks memory")
stop_shadowsocks

SOTTO_OK=0
if write_sotto_configs && start_sotto; then
    if memory sotto "$SOTTO_ENTRY_PID" "$SOTTO_EXIT_PID" --socks "127.0.0.1:$SOCKS_PORT" -- "exit:7"; then
        SOTTO_OK=1
    else
        FAILED+=("sotto memory")
    fi
    alive "$SOTTO_ENTRY_PID" && alive "$SOTTO_EXIT_PID" || SOTTO_STATUS="a gateway died during the flows test"
    stop_sotto
else
    FAILED+=("sotto start")
fi

measure direct --direct -- "127.0.0.1:$ECHO_PORT" "127.0.0.1:$SINK_PORT"

start_shadowsocks
measure shadowsocks --socks "127.0.0.1:$SS_LOCAL_PORT" -- "127.0.0.1:$ECHO_PORT" "127.0.0.1:$SINK_PORT"
stop_shadowsocks

if [[ -f $WORK/entry.toml ]] && start_sotto; then
    measure sotto --socks "127.0.0.1:$SOCKS_PORT" -- "exit:7" "exit:9"
    alive "$SOTTO_ENTRY_PID" && alive "$SOTTO_EXIT_PID" || SOTTO_STATUS="a gateway died during the speed tests"
    stop_sotto
else
    [[ " ${FAILED[*]} " == *" sotto start "* ]] || FAILED+=("sotto start")
fi

# ---------------------------------------------------------------- report

[[ -n $RESULTS_COPY ]] && cp "$RESULTS" "$RESULTS_COPY"

awk -v size="$SIZE" -v flows="$FLOWS" -v sotto_status="$SOTTO_STATUS" '
function field(line, key,   n, i, parts, kv) {
    n = split(line, parts, " ")
    for (i = 1; i <= n; i++) { split(parts[i], kv, "="); if (kv[1] == key) return substr(parts[i], length(key) + 2) }
    return ""
}
/^RESULT / {
    name = field($0, "name"); label = field($0, "label")
    if (name == "udp_rtt") { v[label, "p50"] = field($0, "p50_us"); v[label, "p99"] = field($0, "p99_us") }
    if (name == "udp_rate") v[label, "rate"] = field($0, "rate")
    if (name == "tcp_throughput") v[label, "tcp"] = field($0, "mb_per_s")
    if (name == "udp_flows") v[label, "flows"] = field($0, "established") "/" field($0, "flows")
}
/^MEMORY / {
    label = field($0, "label"); phase = field($0, "phase")
    m[label, phase, 1] = field($0, "first_kib"); m[label, phase, 2] = field($0, "second_kib")
}
function cell(label, key) { return ((label, key) in v && v[label, key] != "") ? v[label, key] : "n/a" }
function ratio(key,   s, o) {
    s = cell("sotto", key); o = cell("shadowsocks", key)
    if (s == "n/a" || o == "n/a" || o + 0 == 0) return "n/a"
    return sprintf("%.2f", s / o)
}
function verdict(key, lower_is_better, aim,   r) {
    r = ratio(key)
    if (r == "n/a") return "not measured"
    met = lower_is_better ? (r + 0 <= 1) : (r + 0 >= 1)
    hit = lower_is_better ? (r + 0 <= aim) : (r + 0 >= aim)
    return sprintf("%s as fast as shadowsocks-libev; aim %s%s: %s", met ? "at least" : "NOT", lower_is_better ? "<= " : ">= ", aim, hit ? "met" : "not met")
}
function mib(label, phase, which,   k) {
    k = m[label, phase, which]
    return (k == "" || k + 0 == 0) ? "n/a" : sprintf("%.1f", k / 1024)
}
END {
    printf "\n%-34s %12s %12s %12s %12s\n", "UDP " size " B / TCP", "direct", "shadowsocks", "sotto", "sotto/ss"
    printf "%-34s %12s %12s %12s %12s\n", "UDP round trip p50 (us)", cell("direct", "p50"), cell("shadowsocks", "p50"), cell("sotto", "p50"), ratio("p50")
    printf "%-34s %12s %12s %12s %12s\n", "UDP round trip p99 (us)", cell("direct", "p99"), cell("shadowsocks", "p99"), cell("sotto", "p99"), ratio("p99")
    printf "%-34s %12s %12s %12s %12s\n", "UDP loss-free rate (datagrams/s)", cell("direct", "rate"), cell("shadowsocks", "rate"), cell("sotto", "rate"), ratio("rate")
    printf "%-34s %12s %12s %12s %12s\n", "TCP throughput (MB/s)", cell("direct", "tcp"), cell("shadowsocks", "tcp"), cell("sotto", "tcp"), ratio("tcp")
    printf "\nTargets (shaping off):\n"
    printf "  round trip p50: %s\n", verdict("p50", 1, 0.8)
    printf "  round trip p99: %s\n", verdict("p99", 1, 0.8)
    printf "  loss-free rate: %s\n", verdict("rate", 0, 2)
    printf "  TCP throughput: %s\n", verdict("tcp", 0, 1)
    printf "\n%-34s %12s %16s %12s\n", "Resident memory (VmRSS, MiB)", "idle", flows " UDP flows", "flows up"
    printf "%-34s %12s %16s %12s\n", "sotto entry gateway", mib("sotto", "idle", 1), mib("sotto", "flows", 1), cell("sotto", "flows")
    printf "%-34s %12s %16s %12s\n", "sotto exit gateway", mib("sotto", "idle", 2), mib("sotto", "flows", 2), cell("sotto", "flows")
    printf "%-34s %12s %16s %12s\n", "ss-local", mib("shadowsocks", "idle", 1), mib("shadowsocks", "flows", 1), cell("shadowsocks", "flows")
    printf "%-34s %12s %16s %12s\n", "ss-server", mib("shadowsocks", "idle", 2), mib("shadowsocks", "flows", 2), cell("shadowsocks", "flows")
    if (sotto_status != "running") printf "\nSotto: %s\n", sotto_status
}' "$RESULTS"

if [[ ${#FAILED[@]} -gt 0 ]]; then
    printf '\nFailed: %s\n' "${FAILED[*]}"
    exit 1
fi
