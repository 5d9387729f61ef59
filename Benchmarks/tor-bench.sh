#!/usr/bin/env bash
# Sotto over Tor vs a raw Tor stream, side by side on one private Tor network (issue 3).
#
#   Sotto path: `sotto coap get` (DTLS PSK, N confirmable GETs over one DTLS session) -> entry
#     gateway's UDP forward -> cells over the entry's own tor -> onion service published by the
#     exit gateway's own tor -> exit gateway -> coap-server-openssl.
#   Raw path: `sotto-bench stream-rtt` -> ONE TCP stream through the network's client tor
#     (SocksPort) -> onion service (ADD_ONION on the network's onion-host tor) -> sotto-bench
#     sized-echo, N exchanges of exactly the bytes of the DTLS GET and of its response.
#   References on loopback: the same GETs straight to coap-server (no gateways) and through a
#   gateway pair with anonymizer "none", so the gateway's own cost can be told from Tor's.
#
# Usage: Benchmarks/tor-bench.sh [--quick] [--scratch-path DIR] [--skip-build] [--results FILE] [--keep]
#   --quick          fewer round trips: a smoke run of about two minutes, not a benchmark
#   --scratch-path   SwiftPM build folder (default: .build in the repository)
#   --skip-build     use the release binaries already in the scratch path
#   --results FILE   also write the raw RESULT lines there
#   --keep           keep the temporary folder (configs, logs, the Tor network) and print its path
# Knobs (environment): CELL_SIZE (498, the default between tor peers: one tor relay cell; 514 straddles two), COUNT (1000 timed GETs / exchanges per path), WARMUP (50), PAYLOAD (64:
#   bytes of the CoAP resource the GETs fetch), SIZING (50 GETs through the size relay).
#
# Everything listens on 127.0.0.1 on ports picked free at start; the Tor network is private
# (`sotto testnet tor up`, never the public one). Every process this script starts is stopped by
# its PID on exit, the onion service it added is removed (DEL_ONION), and the network is stopped
# (`sotto testnet tor down`). Shaping is off on every Sotto profile. Exit status: 0 when every
# measurement ran, 1 otherwise. Needs tor, tor-gencert, coap-server-openssl, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/Benchmarks/lib.sh"
bench_options tor-bench.sh "$0" 28 "$@"

if [[ $QUICK == 1 ]]; then
    : "${COUNT:=200}" "${WARMUP:=20}" "${PAYLOAD:=64}" "${SIZING:=30}"
else
    : "${COUNT:=1000}" "${WARMUP:=50}" "${PAYLOAD:=64}" "${SIZING:=50}"
fi
: "${CELL_SIZE:=498}"
[[ $PAYLOAD =~ ^[0-9]+$ && $PAYLOAD -ge 1 && $PAYLOAD -le 1024 ]] || { echo "tor-bench.sh: PAYLOAD must be 1-1024 bytes" >&2; exit 2; }

say() { printf '== %s\n' "$*" >&2; }

for tool in tor tor-gencert coap-server-openssl python3; do
    command -v "$tool" >/dev/null || { echo "tor-bench.sh: '$tool' is missing (Debian: apt-get install tor libcoap3-bin python3)" >&2; exit 1; }
done

# ---------------------------------------------------------------- build

if [[ $SKIP_BUILD == 0 ]]; then
    say "building release (sotto, sotto-bench) in $SCRATCH"
    # SwiftPM honours only the last --product, so one build each.
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product sotto-bench)
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product sotto)
fi
BIN=$(cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --show-bin-path)
BENCH="$BIN/sotto-bench"
SOTTO="$BIN/sotto"
for binary in "$BENCH" "$SOTTO"; do
    [[ -x $binary ]] || { echo "tor-bench.sh: $binary is missing; build first (drop --skip-build)" >&2; exit 1; }
done

# ---------------------------------------------------------------- processes

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sotto-tor-bench.XXXXXX")
chmod 700 "$WORK"
RESULTS="$WORK/results.txt"
: >"$RESULTS"
declare -a PIDS=()
TORNET=""
ONION_ID=""
TOR_PAIR=()

STOP_GRACE_TENTHS=50   # tor and the gateways may take a few seconds to go (stop_pid, lib.sh)

# control.py add|del ...: ADD_ONION / DEL_ONION on the network's onion-host tor, through the
# control-port client of the Tor tests (tests/tor/tornet.py: COOKIE authentication, control-spec 3.5).
control() {
    PYTHONPATH="$ROOT/tests/tor" python3 - "$@" <<'PY'
import sys
from tornet import ControlConnection

action, port, cookie = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = ControlConnection.open(port)
try:
    conn.authenticate_cookie(cookie)
    if action == "add":
        # Flags=Detach: the service outlives this control connection (control-spec 3.27);
        # DEL_ONION removes it at the end.
        reply = conn.command(f"ADD_ONION NEW:ED25519-V3 Flags=Detach,DiscardPK Port={sys.argv[4]},127.0.0.1:{sys.argv[5]}")
        print(reply.values()["ServiceID"])
    else:
        conn.command(f"DEL_ONION {sys.argv[4]}")
finally:
    conn.close()
PY
}

cleanup() {
    local status=$? i
    # The onion service first: the tor that hosts it may belong to a gateway stopped below.
    if [[ -n $ONION_ID ]]; then
        control del "$ONION_CONTROL_PORT" "$ONION_COOKIE" "$ONION_ID" >/dev/null 2>&1 \
            || say "DEL_ONION $ONION_ID failed (its tor is stopped below anyway)"
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
    if [[ -n $TORNET ]]; then
        "$SOTTO" testnet tor down "$TORNET" 2>>"$WORK/tornet.log" || say "'sotto testnet tor down $TORNET' failed"
    fi
    if [[ $KEEP == 1 || $status != 0 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs it in the background, logs to $WORK/NAME.log, sets LAST_PID.
start() {
    local name=$1; shift
    "$@" </dev/null >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop() { stop_pid "$1"; forget_pid "$1"; }

alive() { kill -0 "$1" 2>/dev/null; }

# wait_for WHAT SECONDS COMMAND...: polls every 0.5 s.
wait_for() {
    local what=$1 seconds=$2 i
    shift 2
    for i in $(seq 1 $((seconds * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    say "timed out after $seconds s waiting for $what"
    return 1
}

FAILED=()

# ---------------------------------------------------------------- ports, keys, CoAP server

# coap-server-openssl -p P serves plain CoAP on P and DTLS on P+1: a pair of free ports.
COAP_BASE=""
for _ in $(seq 1 50); do
    mapfile -t CANDIDATE < <("$BENCH" free-ports --count 1)
    next=$((CANDIDATE[0] + 1))
    if [[ $next -lt 65536 ]] && python3 -c '
import socket, sys
p = int(sys.argv[1])
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    try: s.bind(("127.0.0.1", p))
    except OSError: sys.exit(1)
    finally: s.close()' "$next"; then
        COAP_BASE=${CANDIDATE[0]}
        break
    fi
done
[[ -n $COAP_BASE ]] || { echo "tor-bench.sh: no pair of free ports for coap-server" >&2; exit 1; }
DTLS_PORT=$((COAP_BASE + 1))
mapfile -t PORTS < <("$BENCH" free-ports --count 5)
[[ ${#PORTS[@]} -eq 5 ]] || { echo "tor-bench.sh: could not find 5 free loopback ports" >&2; exit 1; }
ECHO_PORT=${PORTS[0]} FWD_TOR=${PORTS[1]} FWD_LO=${PORTS[2]} TUNNEL_LO=${PORTS[3]} RELAY_PORT=${PORTS[4]}
for port in "${PORTS[@]}"; do
    [[ $port != "$COAP_BASE" && $port != "$DTLS_PORT" ]] || { echo "tor-bench.sh: port clash, run again" >&2; exit 1; }
done

DTLS_IDENTITY="sotto-bench"
DTLS_KEY_FILE="$WORK/dtls.key"
(umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$DTLS_KEY_FILE")
DTLS_KEY=$(cat "$DTLS_KEY_FILE")
coap() { "$SOTTO" coap "$@" --psk-identity "$DTLS_IDENTITY" --psk-key-file "$DTLS_KEY_FILE"; }

say "starting coap-server-openssl (DTLS PSK on udp 127.0.0.1:$DTLS_PORT)"
# The key is on the command line: coap-server-openssl has no key-file option; it is random per run.
start coap-server coap-server-openssl -A 127.0.0.1 -p "$COAP_BASE" -k "$DTLS_KEY" -d 8 -v 3
"$BENCH" wait-listen --udp "127.0.0.1:$DTLS_PORT" --timeout 10

# The resource the GETs fetch: PAYLOAD bytes, so every response has the same size.
RESOURCE=bench
BODY=$(head -c "$PAYLOAD" /dev/zero | tr '\0' 'x')
coap put "coaps://127.0.0.1:$DTLS_PORT/$RESOURCE" --payload "$BODY" >/dev/null
[[ $(coap get "coaps://127.0.0.1:$DTLS_PORT/$RESOURCE") == "$BODY" ]] \
    || { echo "tor-bench.sh: coap-server did not keep the $PAYLOAD-byte resource" >&2; exit 1; }

# coap_json LABEL URI: warm-up session, then COUNT GETs over one DTLS session -> a RESULT line.
coap_json() {
    local label=$1 uri=$2 out
    coap get "$uri" --count "$WARMUP" --json >/dev/null 2>>"$WORK/$label.err" || true
    if ! out=$(coap get "$uri" --count "$COUNT" --json 2>>"$WORK/$label.err"); then
        say "$label: sotto coap get failed: $(tail -c 300 "$WORK/$label.err")"
        FAILED+=("$label")
        return 1
    fi
    python3 -c '
import json, sys
j = json.loads(sys.argv[2])
print("RESULT name=coap_rtt label=%s count=%d failures=%d p50_ms=%s p90_ms=%s p99_ms=%s max_ms=%s"
      % (sys.argv[1], j["count"], j["failures"], j["p50_ms"], j["p90_ms"], j["p99_ms"], j["max_ms"]))' "$label" "$out" \
        | tee -a "$RESULTS" >&2
}

# ---------------------------------------------------------------- sizes of the DTLS datagrams

say "measuring the DTLS datagram sizes of the GET and its response (udp-relay in front of coap-server)"
start udp-relay "$BENCH" udp-relay --listen "127.0.0.1:$RELAY_PORT" --to "127.0.0.1:$DTLS_PORT" --idle 1.5 --lifetime 120
RELAY_PID=$LAST_PID
"$BENCH" wait-listen --udp "127.0.0.1:$RELAY_PORT" --timeout 10
coap get "coaps://127.0.0.1:$RELAY_PORT/$RESOURCE" --count "$SIZING" --json >/dev/null
wait "$RELAY_PID" || true
forget_pid "$RELAY_PID"
SIZES=$(grep '^RESULT name=udp_sizes' "$WORK/udp-relay.log" || true)
[[ -n $SIZES ]] || { echo "tor-bench.sh: the size relay printed nothing: $(tail -c 300 "$WORK/udp-relay.log")" >&2; exit 1; }
echo "$SIZES" >>"$RESULTS"
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
REQ=$(field "$SIZES" to_target_mode)
RESP=$(field "$SIZES" to_client_mode)
[[ $REQ =~ ^[0-9]+$ && $RESP =~ ^[0-9]+$ ]] || { echo "tor-bench.sh: no datagram sizes in: $SIZES" >&2; exit 1; }
say "GET datagram: $REQ bytes; response datagram: $RESP bytes (all sizes seen: to server $(field "$SIZES" to_target), back $(field "$SIZES" to_client))"

# ---------------------------------------------------------------- the private Tor network

say "starting a private Tor network (sotto testnet tor up)"
TORNET="$WORK/tornet"
"$SOTTO" testnet tor up "$TORNET" >"$WORK/tornet.toml" 2>"$WORK/tornet.log" \
    || { echo "tor-bench.sh: the Tor network did not come up: $(tail -c 600 "$WORK/tornet.log")" >&2; exit 1; }
ENV_TEXT=$("$SOTTO" testnet tor env "$TORNET" 2>>"$WORK/tornet.log")
env_value() { sed -n "s/^$1=//p" <<<"$ENV_TEXT"; }
TOR_SOCKS_PORT=$(env_value TOR_SOCKS_PORT)
ONION_CONTROL_PORT=$(env_value ONION_CONTROL_PORT)
ONION_COOKIE=$(env_value ONION_COOKIE)
GATEWAY_TORRC=$(env_value TOR_GATEWAY_TORRC)
[[ -n $TOR_SOCKS_PORT && -n $ONION_CONTROL_PORT && -n $ONION_COOKIE && -n $GATEWAY_TORRC ]] \
    || { echo "tor-bench.sh: 'sotto testnet tor env' lacks a setting: $ENV_TEXT" >&2; exit 1; }

# ---------------------------------------------------------------- the gateways

"$SOTTO" keygen --out "$WORK/keys" --name tor --onion >/dev/null
"$SOTTO" keygen --out "$WORK/keys" --name lo >/dev/null
ONION_PEER=$(cat "$WORK/keys/tor.onion")

# write_pair NAME ANONYMIZER: NAME-exit.toml and NAME-entry.toml, shaping off.
write_pair() {
    local name=$1 anonymizer=$2 tor_section="" service_address peer_address forward
    if [[ $anonymizer == tor ]]; then
        tor_section=$'[tor]\ntorrc_include = "'"$GATEWAY_TORRC"'"'
        service_address="onion_key_file = \"keys/$name.onion_key\""
        peer_address=$ONION_PEER
        forward=$FWD_TOR
    else
        service_address="listen = \"127.0.0.1:$TUNNEL_LO\""
        peer_address="127.0.0.1:$TUNNEL_LO"
        forward=$FWD_LO
    fi
    mkdir -p "$WORK/$name-exit-state" "$WORK/$name-entry-state"
    chmod 700 "$WORK/$name-exit-state" "$WORK/$name-entry-state"
    cat >"$WORK/$name-exit.toml" <<EOF
state_dir = "$name-exit-state"
log_level = "notice"
$tor_section

[[profile]]
name = "bench"
anonymizer = "$anonymizer"
shaping = "off"

[[service]]
name = "coap"
$service_address
private_key_file = "keys/$name.key"
psk_file = "keys/$name.psk"
cell_size = $CELL_SIZE
expose = ["udp 5684 127.0.0.1:$DTLS_PORT"]
EOF
    cat >"$WORK/$name-entry.toml" <<EOF
state_dir = "$name-entry-state"
log_level = "notice"
$tor_section

[[profile]]
name = "bench"
anonymizer = "$anonymizer"
shaping = "off"

[[peer]]
name = "coap"
address = "$peer_address"
public_key_file = "keys/$name.pub"
psk_file = "keys/$name.psk"
cell_size = $CELL_SIZE

[[forward]]
listen = "udp://127.0.0.1:$forward"
to = "coap:5684"
EOF
    chmod 600 "$WORK/$name-exit.toml" "$WORK/$name-entry.toml"
}

gateway_ready() { alive "$2" && grep -q "sotto ready" "$WORK/$1.log"; }
tor_ready() {
    "$SOTTO" status --config "$1" 2>/dev/null |
        python3 -c 'import json, sys; sys.exit(0 if (json.load(sys.stdin).get("tor") or {}).get("state") == "ready" else 1)'
}
get_works() { coap get "$1" --timeout 5 >/dev/null 2>&1; }

# start_pair NAME: both gateways of the pair, up and carrying a GET; sets PAIR_PIDS.
start_pair() {
    local name=$1 uri=$2
    start "$name-exit" "$SOTTO" run --config "$WORK/$name-exit.toml"
    local exit_pid=$LAST_PID
    wait_for "the $name exit gateway" 30 gateway_ready "$name-exit" "$exit_pid" || return 1
    start "$name-entry" "$SOTTO" run --config "$WORK/$name-entry.toml"
    local entry_pid=$LAST_PID
    PAIR_PIDS=("$entry_pid" "$exit_pid")
    wait_for "the $name entry gateway" 30 gateway_ready "$name-entry" "$entry_pid" || return 1
    if [[ $name == tor ]]; then
        wait_for "the exit gateway's tor" 120 tor_ready "$WORK/$name-exit.toml" || return 1
        wait_for "the entry gateway's tor" 120 tor_ready "$WORK/$name-entry.toml" || return 1
    fi
    # Over Tor the first GETs may come before the onion service's descriptor has spread.
    wait_for "a GET through the $name gateway pair" 120 get_works "$uri"
}

# exit_flows NAME: the exit gateway's UDP flows as "id datagramsSent datagramsReceived bytesSent bytesReceived".
exit_flows() {
    "$SOTTO" status --config "$WORK/$1-exit.toml" 2>/dev/null | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tunnels"]:
    for f in t["flows"]:
        if f["kind"].lower().startswith("udp"):
            print(f["id"], f["datagramsSent"], f["datagramsReceived"], f["bytesSent"], f["bytesReceived"])'
}

# ---------------------------------------------------------------- measurements (one run)

cd "$WORK"
write_pair tor tor
write_pair lo none
SOTTO_TOR_URI="coaps://127.0.0.1:$FWD_TOR/$RESOURCE"
SOTTO_LO_URI="coaps://127.0.0.1:$FWD_LO/$RESOURCE"

# The load average before and after the timed runs: other work on the machine slows the tors.
echo "RESULT name=loadavg label=before $(awk '{print "load1=" $1 " load5=" $2}' /proc/loadavg)" >>"$RESULTS"
say "Sotto over Tor: gateways with their own managed tors, onion service $ONION_PEER"
if start_pair tor "$SOTTO_TOR_URI"; then
    TOR_PAIR=("${PAIR_PIDS[@]}")
    grep -h "published at" "$WORK/tor-exit.log" | sed 's/^/    /' >&2 || true
    exit_flows tor >"$WORK/flows-before.txt" || true
    say "sotto-tor: $WARMUP warm-up + $COUNT GETs of a $PAYLOAD-byte resource"
    coap_json sotto-tor "$SOTTO_TOR_URI" || true
    exit_flows tor >"$WORK/flows-after.txt" || true
    # The timed session's flow is the one that is new after it: its counters include its DTLS
    # handshake, so the mean is a little above the GET sizes; a cross-check of the relay's figures.
    python3 - "$WORK/flows-before.txt" "$WORK/flows-after.txt" <<'PY' | tee -a "$RESULTS" >&2 || true
import sys
before = {l.split()[0] for l in open(sys.argv[1]) if l.strip()}
rows = [l.split() for l in open(sys.argv[2]) if l.strip() and l.split()[0] not in before]
if rows:
    i, ds, dr, bs, br = max(rows, key=lambda r: int(r[2]))
    ds, dr, bs, br = int(ds), int(dr), int(bs), int(br)
    print(f"RESULT name=exit_flow_counters label=sotto-tor flow={i} datagrams_to_server={dr} bytes_to_server={br} "
          f"datagrams_to_client={ds} bytes_to_client={bs} mean_to_server={br / max(dr, 1):.1f} mean_to_client={bs / max(ds, 1):.1f}")
PY
else
    FAILED+=("sotto-tor start")
    say "the tor gateway pair did not come up: exit log: $(tail -c 400 "$WORK/tor-exit.log" | tr '\n' ' ') entry log: $(tail -c 400 "$WORK/tor-entry.log" | tr '\n' ' ')"
fi

# The raw stream goes through the SAME two tors as the Sotto path: in through the entry gateway's
# managed tor (its SocksPort, from `sotto status`), out of an onion service added on the exit
# gateway's managed tor (its control port file and cookie in the exit's state dir). Only what
# Sotto adds then differs, apart from the relays each circuit happens to pick.
RAW_SOCKS_PORT=$TOR_SOCKS_PORT
RAW_CONTROL_PORT=$ONION_CONTROL_PORT
RAW_COOKIE=$ONION_COOKIE
RAW_TORS="the network's client tor and onion-host tor"
if [[ ${#TOR_PAIR[@]} -gt 0 ]] && [[ -s "$WORK/tor-exit-state/tor/control-port" ]]; then
    entry_socks=$("$SOTTO" status --config "$WORK/tor-entry.toml" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["tor"]["socks"].rsplit(":", 1)[1])' || true)
    exit_control=$(sed -n 's/^PORT=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/tor-exit-state/tor/control-port" | head -n 1)
    if [[ $entry_socks =~ ^[0-9]+$ && $exit_control =~ ^[0-9]+$ ]]; then
        RAW_SOCKS_PORT=$entry_socks
        RAW_CONTROL_PORT=$exit_control
        RAW_COOKIE="$WORK/tor-exit-state/tor/control_auth_cookie"
        ONION_CONTROL_PORT=$RAW_CONTROL_PORT
        ONION_COOKIE=$RAW_COOKIE
        RAW_TORS="the entry gateway's and the exit gateway's own tors (the Sotto path's tors)"
    fi
fi
echo "RESULT name=raw_path tors=\"$RAW_TORS\"" >>"$RESULTS"
say "raw Tor stream: sized-echo ($REQ -> $RESP bytes) as an onion service, through $RAW_TORS"
start sized-echo "$BENCH" sized-echo --listen "127.0.0.1:$ECHO_PORT" --request-bytes "$REQ" --response-bytes "$RESP" --lifetime 7200
"$BENCH" wait-listen --tcp "127.0.0.1:$ECHO_PORT" --timeout 10
if ONION_ID=$(control add "$RAW_CONTROL_PORT" "$RAW_COOKIE" 80 "$ECHO_PORT" 2>"$WORK/add-onion.err"); then
    say "raw-tor: $WARMUP warm-up + $COUNT exchanges over one stream to $ONION_ID.onion:80"
    if ! "$BENCH" stream-rtt --socks "127.0.0.1:$RAW_SOCKS_PORT" --target "$ONION_ID.onion:80" \
        --request-bytes "$REQ" --response-bytes "$RESP" --count "$COUNT" --warmup "$WARMUP" \
        --connect-attempts 60 --label raw-tor 2>"$WORK/raw-tor.err" | tee -a "$RESULTS" >&2; then
        say "raw-tor: $(tail -c 400 "$WORK/raw-tor.err")"
        FAILED+=("raw-tor")
    fi
else
    ONION_ID=""
    say "ADD_ONION failed: $(tail -c 400 "$WORK/add-onion.err")"
    FAILED+=("raw-tor")
fi

echo "RESULT name=loadavg label=after $(awk '{print "load1=" $1 " load5=" $2}' /proc/loadavg)" >>"$RESULTS"
say "loopback references: the same GETs straight to coap-server, and through a gateway pair with anonymizer none"
coap_json direct "coaps://127.0.0.1:$DTLS_PORT/$RESOURCE" || true
if start_pair lo "$SOTTO_LO_URI"; then
    coap_json sotto-loopback "$SOTTO_LO_URI" || true
    for pid in "${PAIR_PIDS[@]}"; do stop "$pid"; done
else
    FAILED+=("sotto-loopback start")
fi

# ---------------------------------------------------------------- report

[[ -n $RESULTS_COPY ]] && cp "$RESULTS" "$RESULTS_COPY"

python3 - "$RESULTS" "$COUNT" "$PAYLOAD" "$REQ" "$RESP" "$CELL_SIZE" "$RAW_TORS" <<'PY'
import sys

path, count, payload, req, resp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cell, raw_tors = int(sys.argv[6]), sys.argv[7]
rows, flow, load = {}, None, {}
for line in open(path):
    if not line.startswith("RESULT "):
        continue
    fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
    if fields.get("name") in ("coap_rtt", "stream_rtt"):
        rows[fields["label"]] = fields
    elif fields.get("name") == "exit_flow_counters":
        flow = fields
    elif fields.get("name") == "loadavg":
        load[fields["label"]] = fields.get("load1", "?")

def ms(label, key):
    r = rows.get(label)
    if not r:
        return None
    if key + "_ms" in r:
        return float(r[key + "_ms"])
    if key + "_us" in r:
        return float(r[key + "_us"]) / 1000
    return None

def show(v, places=3):
    return "n/a" if v is None else f"{v:.{places}f}"

print(f"\nRound trip (ms), {count} one at a time per path; GET datagram {req} B, response datagram {resp} B "
      f"(DTLS records of a GET for a {payload}-byte resource)")
print(f"{'path':<58} {'p50':>9} {'p99':>9}")
labels = [
    ("sotto-tor", "Sotto over Tor: CoAP DTLS GET via entry+exit gateways"),
    ("raw-tor", f"raw Tor stream: {req} B out, {resp} B back, one stream"),
    ("direct", "reference: same GET straight to coap-server, loopback"),
    ("sotto-loopback", "reference: same GET via gateways, anonymizer none"),
]
for label, text in labels:
    print(f"{text:<58} {show(ms(label, 'p50')):>9} {show(ms(label, 'p99')):>9}")

def diff(a, b, key):
    x, y = ms(a, key), ms(b, key)
    return None if x is None or y is None else x - y

def ratio(a, b, key):
    x, y = ms(a, key), ms(b, key)
    return None if x is None or y is None or y == 0 else x / y

print()
for key in ("p50", "p99"):
    print(f"Sotto over Tor - raw Tor stream, {key}: {show(diff('sotto-tor', 'raw-tor', key))} ms added, "
          f"ratio {show(ratio('sotto-tor', 'raw-tor', key), 2)}")
for key in ("p50", "p99"):
    print(f"Gateway pair on loopback - direct, {key}: {show(diff('sotto-loopback', 'direct', key))} ms "
          f"(the gateways' own cost without Tor)")
added = diff("sotto-tor", "raw-tor", "p50")
net = None if added is None or ms("direct", "p50") is None else added - ms("direct", "p50")
print(f"Sotto over Tor - raw Tor stream - direct CoAP/DTLS endpoints, p50: {show(net)} ms "
      f"(the added latency without the CoAP client's and server's own time, which the raw path does not have)")
verdict = "NOT MEASURED" if added is None else ("MET" if added < 1.0 else "NOT MET")
print(f"\nTarget (shaping off): Sotto adds under 1 ms p50 over the raw Tor stream: {verdict}"
      + ("" if added is None else f" (added p50 {added:.3f} ms)"))
# The gateways cannot make a round trip faster, nor slower by much more than their own loopback
# cost; a gap beyond that (either way) is the two paths' circuits or the machine's load.
own = diff("sotto-loopback", "direct", "p50")
reliable = "unknown" if added is None or own is None else ("yes" if abs(added) <= own + 1.0 else "no")
if reliable == "no":
    print(f"  CAUTION: the Tor paths differ by {abs(added):.3f} ms p50, more than the gateways' own loopback cost "
          f"({own:.3f} ms) plus 1 ms: circuit or load noise dominates this run; run it again.")
print(f"Load average (1 min) before / after the Tor runs: {load.get('before', '?')} / {load.get('after', '?')} on {__import__('os').cpu_count()} CPUs")
print(f"RESULT name=tor_added label=sotto-tor added_p50_ms={show(added)} added_p99_ms={show(diff('sotto-tor', 'raw-tor', 'p99'))} "
      f"ratio_p50={show(ratio('sotto-tor', 'raw-tor', 'p50'), 2)} ratio_p99={show(ratio('sotto-tor', 'raw-tor', 'p99'), 2)} "
      f"net_of_endpoints_p50_ms={show(net)} target={verdict.replace(' ', '_')} reliable={reliable}")
print(f"""
What differs between the paths:
  - Sotto: each DTLS datagram ({req} / {resp} B) travels in one sealed {cell}-byte Sotto cell, written to
    the tor stream as {cell} bytes: {"one RELAY_DATA cell (498 B) each way, as the raw stream's " + str(req) + " / " + str(resp) + " B" if cell <= 498 else "more than one RELAY_DATA cell holds (498 B), so 2 tor cells each way where the raw stream's take 1"}.
  - Sotto: coap client -> UDP forward -> entry gateway's own managed tor -> rendezvous -> exit
    gateway's own managed tor -> exit gateway -> coap-server (DTLS and CoAP at both ends).
    Raw: sotto-bench -> {raw_tors} -> sized-echo. Both: a 3-hop client circuit and a 3-hop service circuit meeting at a
    rendezvous relay of the same private network; which relays each circuit uses is tor's choice.
  - Sizes: GET/response datagram sizes measured with sotto-bench udp-relay in front of coap-server
    ({req} / {resp} B modal);""" + (f""" the exit gateway's counters for the timed session's flow: mean
    {flow.get('mean_to_server')} B to the server, {flow.get('mean_to_client')} B back (DTLS handshake included).""" if flow else " no exit-gateway flow counters were read."))
PY

if [[ ${#FAILED[@]} -gt 0 ]]; then
    printf '\nFailed: %s\n' "${FAILED[*]}"
    exit 1
fi
