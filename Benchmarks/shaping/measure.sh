#!/usr/bin/env bash
# The shaping measurement of issue 5: what a network observer of the tunnel can still tell.
#
# For each shaping setting it starts, on 127.0.0.1, an exit gateway (anonymizer none) in front of
# `sotto coap-server` and a TCP sink, an entry gateway with that setting and two local forwards,
# and tcpdump on the tunnel's TCP port (what an observer of the link sees). One timeline per
# setting (sotto-bench shaping-workload): idle (DTLS session open, nothing sent), chat (CoAP
# POSTs, Poisson about 2 messages/s, 50-1,000 bytes, the same seeded schedule for every setting),
# bulk (a TCP transfer as fast as the shaping allows). Then Benchmarks/shaping/analyze.py computes
# per setting the idle-vs-active classifier AUC, the bandwidth overhead and the added latency,
# writes results.md / results.json and the traffic plots (SVG) for `off` and the default
# `constant`. The method is in Benchmarks/shaping/METHOD.md.
#
# Usage: Benchmarks/shaping/measure.sh [--quick] [--sweep] [--out DIR]
#   --quick   20 s idle, 20 s chat, 5 s bulk per setting (a smoke run; the AUC needs more windows)
#   --sweep   adds a sweep of constant rates and jitters, poisson rates and padded ranges
#   --out     where results go (default Benchmarks/shaping/results)
#   --only P  only the settings of these policies (comma-separated: off,padded,constant,poisson),
#             e.g. a long run of `--only off,constant` to pin down the default's AUC
# Environment: IDLE, CHAT, BULK (seconds per phase; defaults 60, 60, 15), SEED (chat schedule),
#   SOTTO, SOTTO_BENCH (binaries; default: release build, built when missing), KEEP=1 keeps the
#   pcaps and logs (in the work folder, printed at the end).
# Needs root or CAP_NET_RAW for tcpdump (installed with apt-get when missing). About 2.5 minutes
# per setting with the defaults: 4 settings without --sweep, 15 with it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

idle=${IDLE:-60} chat=${CHAT:-60} bulk=${BULK:-15} seed=${SEED:-7}
sweep=0
only=""
out="$ROOT/Benchmarks/shaping/results"
while [[ $# -gt 0 ]]; do
    case "$1" in
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --quick) idle=20 chat=20 bulk=5 ;;
    --sweep) sweep=1 ;;
    --out) [[ $# -ge 2 ]] || { echo "measure.sh: --out needs a folder" >&2; exit 2; }; out=$2; shift ;;
    --only)
        [[ $# -ge 2 && $2 =~ ^(off|padded|constant|poisson)(,(off|padded|constant|poisson))*$ ]] || {
            echo "measure.sh: --only takes policies separated by commas (off,padded,constant,poisson)" >&2; exit 2; }
        only=$2; shift ;;
    *) echo "measure.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in "$idle" "$chat" "$bulk" "$seed"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "measure.sh: IDLE, CHAT, BULK and SEED must be whole numbers, got '$v'" >&2; exit 2; }
done

bash scripts/install-deps.sh >/dev/null || { echo "measure.sh: installing dependencies failed" >&2; exit 1; }
if ! command -v tcpdump >/dev/null; then
    echo "measure.sh: installing tcpdump" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpdump >/dev/null </dev/null
fi
source "$ROOT/Benchmarks/lib.sh"
release_binaries measure.sh

work=$(mktemp -d /tmp/sotto-shaping.XXXXXX)
pids=()
stop_all() {
    stop_pids
    pids=()
}
cleanup() {
    stop_all
    if [[ ${KEEP:-0} == 1 ]]; then echo "measure.sh: pcaps and logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
umask 077

# Settings: "label|policy|profile keys (TOML lines separated by ;)|default|plot"
settings=(
    "off|off||0|1"
    "padded 10-50 ms|padded|min_delay_ms = 10;max_delay_ms = 50|1|0"
    "constant 10/s ±20%|constant|rate = 10;jitter = 0.2|1|1"
    "poisson 10/s|poisson|rate = 10|1|0"
)
if [[ $sweep == 1 ]]; then
    settings+=(
        "constant 5/s ±20%|constant|rate = 5;jitter = 0.2|0|0"
        "constant 14/s ±20%|constant|rate = 14;jitter = 0.2|0|0"
        "constant 20/s ±20%|constant|rate = 20;jitter = 0.2|0|0"
        "constant 10/s ±0%|constant|rate = 10;jitter = 0|0|0"
        "constant 10/s ±50%|constant|rate = 10;jitter = 0.5|0|0"
        "constant 10/s ±90%|constant|rate = 10;jitter = 0.9|0|0"
        "poisson 5/s|poisson|rate = 5|0|0"
        "poisson 20/s|poisson|rate = 20|0|0"
        "padded 0-200 ms|padded|min_delay_ms = 0;max_delay_ms = 200|0|0"
        "padded 50-500 ms|padded|min_delay_ms = 50;max_delay_ms = 500|0|0"
        "padded 0-20 ms|padded|min_delay_ms = 0;max_delay_ms = 20|0|0"
    )
fi

if [[ -n $only ]]; then
    kept=()
    for setting in "${settings[@]}"; do
        IFS='|' read -r _ policy _ <<<"$setting"
        [[ ",$only," == *",$policy,"* ]] && kept+=("$setting")
    done
    settings=("${kept[@]}")
fi

free_ports() { "$bench" free-ports --count "$1"; }
wait_tcp() { "$bench" wait-listen --tcp "127.0.0.1:$1" --timeout 30; }
wait_udp() { "$bench" wait-listen --udp "127.0.0.1:$1" --timeout 30; }

# Keys, and the CoAP server shared by every setting.
"$sotto" keygen --out "$work/keys" --name exit >/dev/null
key=shaping-$RANDOM$RANDOM
printf '%s' "$key" > "$work/chat.psk"
cat > "$work/coap-server.toml" <<EOF
[coap_server]
listen = ["127.0.0.1:0"]
database = "$work/store.sqlite"
max_envelopes_per_box = 1000000
[[coap_server.psk]]
identity = "chat"
key_file = "$work/chat.psk"
EOF
"$sotto" coap-server --config "$work/coap-server.toml" --log-level info > "$work/coap-server.log" 2>&1 &
coap_pid=$!
coap_port=""
for _ in $(seq 1 500); do
    coap_port=$(sed -n 's/.*listening on coaps:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/coap-server.log" | head -1)
    [[ -n $coap_port ]] && break
    sleep 0.02
done
[[ -n $coap_port ]] || { echo "measure.sh: sotto coap-server did not start:" >&2; cat "$work/coap-server.log" >&2; exit 1; }

runs_file="$work/runs.jsonl"
: > "$runs_file"
index=0
total=${#settings[@]}
for setting in "${settings[@]}"; do
    index=$((index + 1))
    IFS='|' read -r label policy keys is_default plot <<< "$setting"
    run="$work/run$index"
    mkdir -p "$run"
    mapfile -t ports < <(free_ports 4)
    tunnel_port=${ports[0]} udp_fwd=${ports[1]} tcp_fwd=${ports[2]} sink_port=${ports[3]}
    echo "measure.sh: [$index/$total] $label: idle $idle s, chat $chat s, bulk $bulk s" >&2

    cat > "$run/exit.toml" <<EOF
state_dir = "$run/state-exit"
log_level = "warning"
[tunnel]
udp_flow_idle_seconds = 3600
[[profile]]
name = "direct"
anonymizer = "none"
[[service]]
name = "home"
listen = "127.0.0.1:$tunnel_port"
private_key_file = "$work/keys/exit.key"
psk_file = "$work/keys/exit.psk"
expose = ["udp 5684 127.0.0.1:$coap_port", "tcp 9000 127.0.0.1:$sink_port"]
shaping_min_rate = 0.1
shaping_max_rate = 1000
shaping_max_delay_ms = 10000
EOF
    profile_keys=$(tr ';' '\n' <<< "$keys")
    cat > "$run/entry.toml" <<EOF
state_dir = "$run/state-entry"
log_level = "warning"
[tunnel]
udp_flow_idle_seconds = 3600
[[profile]]
name = "measured"
anonymizer = "none"
shaping = "$policy"
$profile_keys
[[peer]]
name = "home"
address = "127.0.0.1:$tunnel_port"
public_key_file = "$work/keys/exit.pub"
psk_file = "$work/keys/exit.psk"
[[forward]]
listen = "udp://127.0.0.1:$udp_fwd"
to = "home:5684"
[[forward]]
listen = "tcp://127.0.0.1:$tcp_fwd"
to = "home:9000"
EOF
    "$sotto" run --config "$run/exit.toml" > "$run/exit.log" 2>&1 &
    pids+=($!)
    wait_tcp "$tunnel_port"
    tcpdump -i lo -s 128 -U -w "$run/tunnel.pcap" "tcp port $tunnel_port" > "$run/tcpdump.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 250); do grep -q "listening on" "$run/tcpdump.log" 2>/dev/null && break; sleep 0.02; done
    grep -q "listening on" "$run/tcpdump.log" || { echo "measure.sh: tcpdump did not start:" >&2; cat "$run/tcpdump.log" >&2; exit 1; }
    "$sotto" run --config "$run/entry.toml" > "$run/entry.log" 2>&1 &
    pids+=($!)
    wait_udp "$udp_fwd"
    wait_tcp "$tcp_fwd"

    # Idle and chat; the shapers' counters are read before the bulk phase fills their queues.
    "$bench" shaping-workload --coap "127.0.0.1:$udp_fwd" --identity chat --psk-file "$work/chat.psk" \
        --box "run$index" --idle "$idle" --chat "$chat" --bulk 0 --seed "$seed" --out "$run/workload.json" >&2
    "$sotto" status --config "$run/entry.toml" > "$run/entry-status.json"
    "$sotto" status --config "$run/exit.toml" > "$run/exit-status.json"
    if [[ $bulk -gt 0 ]]; then
        "$bench" shaping-workload --coap "127.0.0.1:$udp_fwd" --identity chat --psk-file "$work/chat.psk" \
            --bulk-to "127.0.0.1:$tcp_fwd" --sink "127.0.0.1:$sink_port" \
            --idle 0 --chat 0 --bulk "$bulk" --out "$run/workload-bulk.json" >&2
    else
        echo '{"phases": []}' > "$run/workload-bulk.json"
    fi
    sleep 1   # the last packets reach the capture
    stop_all

    python3 - "$run" "$label" "$policy" "$keys" "$is_default" "$plot" "$tunnel_port" >> "$runs_file" <<'PYEOF'
import json, sys
run, label, policy, keys, is_default, plot, port = sys.argv[1:]
params = {}
for item in filter(None, keys.split(";")):
    k, v = (x.strip() for x in item.split("="))
    params[k] = float(v)
def shaping(path):
    tunnels = [t for t in json.load(open(path))["tunnels"] if t.get("shaping")]
    return tunnels[0]["shaping"] if tunnels else None   # after the chat phase, before bulk
workload = json.load(open(f"{run}/workload.json"))
print(json.dumps({
    "label": label, "policy": policy, "params": params,
    "default": is_default == "1", "plot": plot == "1",
    "pcap": f"{run}/tunnel.pcap", "tunnel_port": int(port),
    "phases": workload["phases"] + json.load(open(f"{run}/workload-bulk.json"))["phases"],
    "shaper": {"entry": shaping(f"{run}/entry-status.json"), "exit": shaping(f"{run}/exit-status.json")},
}))
PYEOF
done
kill "$coap_pid" 2>/dev/null || true
wait "$coap_pid" 2>/dev/null || true

python3 - "$runs_file" "$work/manifest.json" "$idle" "$chat" "$bulk" "$seed" <<'PYEOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
json.dump({"cell_size": 514, "window_seconds": 1.0,
           "workload": {"idle_s": int(sys.argv[3]), "chat_s": int(sys.argv[4]), "bulk_s": int(sys.argv[5]), "seed": int(sys.argv[6]),
                        "chat": "CoAP POST over DTLS-PSK, Poisson 2 messages/s, 50-1000 bytes uniform"},
           "runs": runs}, open(sys.argv[2], "w"), indent=1)
PYEOF
mkdir -p "$out"
python3 "$ROOT/Benchmarks/shaping/analyze.py" "$work/manifest.json" --out "$out"
echo "measure.sh: results in $out (results.md, results.json, traffic-*.svg)" >&2
