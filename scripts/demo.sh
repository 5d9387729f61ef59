#!/usr/bin/env bash
# Demo: CoAP over DTLS (PSK) through a pair of Sotto gateways and an onion service of a private
# Tor network, all on 127.0.0.1 (the public Tor network is never contacted).
#
#   coap-client-openssl --DTLS--> entry gateway (udp forward) ==cells==> tor ... onion service
#       ==> exit gateway --> coap-server-openssl
#
# Installs what is missing, builds `sotto`, starts a private Tor network (`sotto testnet tor up`:
# 3 authorities, 3 relays, on 127.0.0.1), libcoap's DTLS server and two gateways, each with a tor
# of its own that joins that network (exit: an onion service exposing udp 5684; entry: a UDP local
# forward and a SOCKS port), sends CoAP requests through the forward, prints the answers and a
# short `sotto status` of both gateways, then stops everything it started, by PID. Exits non-zero
# if the CoAP exchange failed.
#
#   scripts/demo.sh            over the private Tor network (about half a minute)
#   scripts/demo.sh --direct   the same without Tor (anonymizer none), a few seconds
#
# Environment: SOTTO_SCRATCH_PATH (build folder instead of .build), SOTTO_DEMO_KEEP=1 (keep the
# demo folder with configs and logs).
set -euo pipefail

MODE=tor
case "${1:-}" in
"") ;;
--direct) MODE=direct ;;
*) echo "usage: scripts/demo.sh [--direct]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null && [[ -x /opt/swift/usr/bin/swift ]]; then
    export PATH="$PATH:/opt/swift/usr/bin"
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "installing missing dependencies"
bash scripts/install-deps.sh

SWIFT_FLAGS=()
[[ -n "${SOTTO_SCRATCH_PATH:-}" ]] && SWIFT_FLAGS=(--scratch-path "$SOTTO_SCRATCH_PATH")
say "building sotto"
swift build --product sotto "${SWIFT_FLAGS[@]}" </dev/null 2>&1 | tail -n 3
SOTTO="$(swift build --product sotto "${SWIFT_FLAGS[@]}" --show-bin-path </dev/null)/sotto"
[[ -x "$SOTTO" ]] || { echo "demo: no sotto binary at $SOTTO" >&2; exit 1; }

DEMO="$(mktemp -d /tmp/sotto-demo.XXXXXX)"
PIDS=()
NAMES=()
TORNET=""

# Stops what this script started, newest first, by PID: SIGTERM, then SIGKILL after 5 s.
cleanup() {
    local status=$?
    local i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                echo "demo: ${NAMES[$i]} (pid $pid) ignored SIGTERM; killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $TORNET ]]; then
        "$SOTTO" testnet tor down "$TORNET" 2>/dev/null || echo "demo: 'sotto testnet tor down $TORNET' failed" >&2
    fi
    if [[ -n "${SOTTO_DEMO_KEEP:-}" || $status != 0 ]]; then
        echo "demo: configs and logs kept in $DEMO"
    else
        rm -rf "$DEMO"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {  # start NAME LOGFILE COMMAND...
    local name=$1 log=$2
    shift 2
    "$@" </dev/null >"$log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
}

# A port P free for TCP and UDP on 127.0.0.1, with P+1 free too when asked (coap-server uses both).
free_port() {
    python3 - "${1:-1}" <<'PY'
import socket, sys
need = int(sys.argv[1])
def free(p):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
        finally:
            s.close()
    return True
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p + need <= 65536 and all(free(p + i) for i in range(need)):
        print(p); break
else:
    sys.exit("no free port")
PY
}

udp_bound() {  # whether some socket is bound to UDP port $1 (from /proc, binds nothing)
    local hex
    hex=$(printf ':%04X ' "$1")
    grep -q "$hex" /proc/net/udp /proc/net/udp6 2>/dev/null
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    echo "demo: timed out waiting for $what" >&2
    return 1
}

ready() {  # ready LOGFILE PID: the gateway logged "sotto ready" (and is still running)
    kill -0 "$2" 2>/dev/null || { echo "demo: gateway exited early:" >&2; cat "$1" >&2; exit 1; }
    grep -q "sotto ready" "$1"
}

COAP_BASE=$(free_port 2)          # coap-server: CoAP on COAP_BASE, DTLS on COAP_BASE+1
DTLS_PORT=$((COAP_BASE + 1))
TUNNEL_PORT=$(free_port)
SOCKS_PORT=$(free_port)
FORWARD_PORT=$(free_port)
DTLS_PSK="sotto-demo-psk-$RANDOM$RANDOM"
DTLS_IDENTITY="sotto-demo"

cd "$DEMO"
if [[ $MODE == tor ]]; then
    say "starting a private Tor network on 127.0.0.1 (sotto testnet tor up)"
    TORNET="$DEMO/tornet"
    "$SOTTO" testnet tor up "$TORNET" >tornet.toml
    # What `up` printed for gateways: a [tor] section that includes the network's gateway.torrc.
    TOR_SECTION="$(grep -v '^#' tornet.toml)"
    ANONYMIZER=tor
    # --onion: the exit's onion identity, made now, so that the entry's config can name it.
    "$SOTTO" keygen --out keys --name home --onion >/dev/null
    PEER_ADDRESS="$(cat keys/home.onion)"
    SERVICE_LINE='onion_key_file = "keys/home.onion_key"'
    EXIT_WHAT="onion service $PEER_ADDRESS"
else
    TOR_SECTION=""
    ANONYMIZER=none
    "$SOTTO" keygen --out keys --name home >/dev/null
    PEER_ADDRESS="127.0.0.1:$TUNNEL_PORT"
    SERVICE_LINE="listen = \"127.0.0.1:$TUNNEL_PORT\""
    EXIT_WHAT="tunnel listener 127.0.0.1:$TUNNEL_PORT"
fi

cat >exit.toml <<EOF
# The exit gateway (anonymizer $ANONYMIZER; with tor, its tor publishes an onion service for the
# tunnel listener) delivers virtual port 5684 to the DTLS CoAP server.
state_dir = "state-exit"
$TOR_SECTION

[[profile]]
name = "private"
anonymizer = "$ANONYMIZER"

[[service]]
name = "home"
$SERVICE_LINE
private_key_file = "keys/home.key"
psk_file = "keys/home.psk"
expose = ["udp 5684 127.0.0.1:$DTLS_PORT"]
EOF

cat >entry.toml <<EOF
# The entry gateway: a SOCKS5 server, and a UDP forward for coap-client, which speaks no SOCKS.
state_dir = "state-entry"
$TOR_SECTION

[socks]
listen = "127.0.0.1:$SOCKS_PORT"

[[profile]]
name = "private"
anonymizer = "$ANONYMIZER"

[[peer]]
name = "home"
address = "$PEER_ADDRESS"
public_key_file = "keys/home.pub"
psk_file = "keys/home.psk"

[[forward]]
listen = "udp://127.0.0.1:$FORWARD_PORT"
to = "home:5684"
EOF

say "starting coap-server-openssl (DTLS PSK on udp $DTLS_PORT)"
start coap-server coap-server.log coap-server-openssl -A 127.0.0.1 -p "$COAP_BASE" -k "$DTLS_PSK" -d 8 -v 4
wait_for "coap-server to bind udp $DTLS_PORT" 10 udp_bound "$DTLS_PORT"

say "starting the exit gateway ($EXIT_WHAT)"
start exit-gateway exit.log "$SOTTO" run --config exit.toml
wait_for "the exit gateway" 20 ready exit.log "${PIDS[-1]}"

say "starting the entry gateway (SOCKS 127.0.0.1:$SOCKS_PORT, forward udp 127.0.0.1:$FORWARD_PORT -> home:5684)"
start entry-gateway entry.log "$SOTTO" run --config entry.toml
wait_for "the entry gateway" 20 ready entry.log "${PIDS[-1]}"

tor_ready() {  # tor_ready CONFIG: the gateway's `sotto status` says its tor is ready
    "$SOTTO" status --config "$1" 2>/dev/null |
        python3 -c 'import json, sys; sys.exit(0 if (json.load(sys.stdin).get("tor") or {}).get("state") == "ready" else 1)'
}
if [[ $MODE == tor ]]; then
    say "waiting for both gateways' tors to bootstrap and the onion service to be published"
    wait_for "the exit's tor" 90 tor_ready exit.toml
    wait_for "the entry's tor" 90 tor_ready entry.toml
    grep -h "published at\|tor is ready" exit.log entry.log | sed 's/^/    /'
fi

URL="coaps://127.0.0.1:$FORWARD_PORT"
ok=1
coap() {  # prints the command and its output; coap-client exits 0 even on failure
    echo "\$ coap-client-openssl -B 10 -k '***' -u $DTLS_IDENTITY $(printf '%q ' "$@")"
    local out
    out=$(coap-client-openssl -B 10 -k "$DTLS_PSK" -u "$DTLS_IDENTITY" "$@" 2>&1) || true
    printf '%s\n' "$out" | sed 's/^/    /'
    LAST="$out"
}

say "CoAP over DTLS through the gateways"
coap -m get "$URL/time"
# Over Tor the first request may come before the onion service's descriptor has spread; the
# tunnel retries by itself: ask again a few times (bounded).
for _ in 1 2 3 4 5 6; do
    grep -qE '^[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}$' <<<"$LAST" && break
    [[ $MODE == tor ]] || break
    sleep 2
    coap -m get "$URL/time"
done
if ! grep -qE '^[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}$' <<<"$LAST"; then ok=0; fi
coap -m put -e "hello through sotto" "$URL/demo"
coap -m get "$URL/demo"
if [[ "$LAST" != "hello through sotto" ]]; then ok=0; fi

say "sotto status (short)"
cat >status-short.py <<'PY'
import json, sys

side = sys.argv[1]
s = json.load(sys.stdin)
listeners = "; ".join(s["listeners"])
print(f"{side} gateway: pid {s['pid']}, up {s['uptimeSeconds']:.1f} s, listening: {listeners}")
tor = s.get("tor")
if tor:
    onions = ", ".join(f"{k} at {v}" for k, v in tor["onionServices"].items())
    print(f"  tor ({tor['mode']}): {tor['detail']}, SocksPort {tor['socks']}" + (f", onion service {onions}" if onions else ""))
for t in s["tunnels"]:
    print(f"  tunnel {t['name']} ({t['side']}, {t['remote']}): {t['state']}, "
          f"cells {t['cellsSent']} sent / {t['cellsReceived']} received ({t['cellSize']} bytes each), "
          f"datagrams {t['datagramsSent']} sent / {t['datagramsReceived']} received, "
          f"flows {t['flowsOpen']} open / {t['flowsOpened']} opened")
moved = ", ".join(f"{k}={v}" for k, v in sorted(s["counters"].items()) if v)
print("  counters: " + (moved or "all zero"))
PY
for side in exit entry; do
    "$SOTTO" status --config "$side.toml" | python3 status-short.py "$side" || ok=0
done

if [[ $ok == 1 ]]; then
    say "demo ok: CoAP over DTLS went through both gateways$([[ $MODE == tor ]] && echo " and an onion service of the private Tor network"); stopping everything"
    exit 0
fi
say "demo FAILED: the CoAP answers above are not what the server sends"
echo "--- exit.log ---"; tail -n 30 exit.log
echo "--- entry.log ---"; tail -n 30 entry.log
echo "--- coap-server.log ---"; tail -n 30 coap-server.log
exit 1
