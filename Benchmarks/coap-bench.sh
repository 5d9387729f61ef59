#!/usr/bin/env bash
# Requests per second and p50/p99 round trip of confirmable POST and GET over DTLS-PSK on
# loopback: `sotto coap-server` (SQLite store on) against libcoap's `coap-server-openssl`, with
# the same client (`sotto coap ... --count N --json`, one DTLS session per run) and the same
# payload. Prints one line per run and the sotto/libcoap ratio of requests per second (target >= 0.9).
#
# Usage: Benchmarks/coap-bench.sh [COUNT] [PAYLOAD_BYTES]     (defaults 2000 and 64)
# SOTTO=path/to/sotto picks the binary (default .build/release/sotto); ROUNDS=N (default 5) runs
# N rounds with the servers' order swapped each round and reports the median ratio.
set -euo pipefail

case "${1:-}" in
-h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
count=${1:-2000}
payload_bytes=${2:-64}
rounds=${ROUNDS:-5}
[[ $count =~ ^[0-9]+$ && $count -ge 1 ]] || { echo "coap-bench.sh: COUNT must be a positive number, got '$count' (see --help)" >&2; exit 2; }
[[ $rounds =~ ^[0-9]+$ && $rounds -ge 1 && $rounds -le 20 ]] || { echo "coap-bench.sh: ROUNDS must be from 1 to 20, got '$rounds'" >&2; exit 2; }
[[ $payload_bytes =~ ^[0-9]+$ && $payload_bytes -ge 1 ]] || { echo "coap-bench.sh: PAYLOAD_BYTES must be a positive number, got '$payload_bytes'" >&2; exit 2; }
sotto=${SOTTO:-.build/release/sotto}
[ -x "$sotto" ] || { echo "no sotto binary at $sotto (swift build -c release, or set SOTTO)" >&2; exit 2; }
command -v coap-server-openssl >/dev/null || { echo "coap-server-openssl is missing (apt install libcoap3-bin)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

key=bench-key-$RANDOM$RANDOM
umask 077
printf '%s' "$key" > "$work/key.psk"
payload=$(head -c "$payload_bytes" /dev/zero | tr '\0' 'p')

# A free UDP port pair on 127.0.0.1 (coap-server-openssl takes P for coap and P+1 for coaps).
free_port_pair() {
    python3 - <<'EOF'
import socket
for _ in range(50):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    try:
        socks = [a]
        for port, kind in ((p + 1, socket.SOCK_DGRAM), (p, socket.SOCK_STREAM), (p + 1, socket.SOCK_STREAM)):
            s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", port)); socks.append(s)
        print(p); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
EOF
}

# sotto coap-server: the box limit is raised so that COUNT POSTs fit in one box.
cat > "$work/server.toml" <<EOF
[coap_server]
listen = ["127.0.0.1:0"]
database = "$work/bench.sqlite"
max_envelopes_per_box = 1000000
[[coap_server.psk]]
identity = "bench"
key_file = "$work/key.psk"
EOF
"$sotto" coap-server --config "$work/server.toml" --log-level info > "$work/sotto.log" 2>&1 &
pids+=($!)
sotto_port=""
for _ in $(seq 1 250); do
    sotto_port=$(sed -n 's/.*listening on coaps:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/sotto.log" | head -1)
    [ -n "$sotto_port" ] && break
    sleep 0.02
done
[ -n "$sotto_port" ] || { echo "sotto coap-server did not start:" >&2; cat "$work/sotto.log" >&2; exit 1; }

libcoap_base=$(free_port_pair)
coap-server-openssl -A 127.0.0.1 -p "$libcoap_base" -k "$key" -d 50 -v 0 >/dev/null 2>&1 &
pids+=($!)
libcoap_port=$((libcoap_base + 1))
sleep 0.3

client() { "$sotto" coap "$@" --psk-identity bench --psk-key-file "$work/key.psk" --timeout 10; }

# Prepare the GET targets: one envelope of the payload in /mb/get; one resource /get.
client post "coaps://127.0.0.1:$sotto_port/mb/get" --payload "$payload" >/dev/null
client put "coaps://127.0.0.1:$libcoap_port/get" --payload "$payload" >/dev/null
client put "coaps://127.0.0.1:$libcoap_port/post" --payload "$payload" >/dev/null

# run NAME METHOD URI [ARGS...]: prints "NAME requests/s p50 p99 failures", sets $rate.
run() {
    local name=$1 method=$2 uri=$3; shift 3
    local start end json
    start=$(date +%s%N)
    json=$(client "$method" "$uri" --count "$count" --json "$@")
    end=$(date +%s%N)
    rate=$(python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(round((j['count']-j['failures'])/((int(sys.argv[3])-int(sys.argv[2]))/1e9), 1))" "$json" "$start" "$end")
    python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(f\"{sys.argv[2]:<34} {sys.argv[3]:>9} req/s  p50 {j['p50_ms']} ms  p99 {j['p99_ms']} ms  failures {j['failures']}\")" "$json" "$name" "$rate"
}

echo "confirmable requests over DTLS-PSK on loopback, $count per run, $payload_bytes-byte payload"
# Both servers share the machine with whatever else runs: the load says how far to trust a run.
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
# Warm-up (first handshake, page cache, SQLite file growth), not counted.
client get "coaps://127.0.0.1:$sotto_port/mb/get" --count 200 --json >/dev/null
client get "coaps://127.0.0.1:$libcoap_port/get" --count 200 --json >/dev/null

# ROUNDS rounds, each with both servers back to back, the order swapped every round, so that a
# burst of other work on the machine does not land on one server only; the ratio is the median of
# the rounds' ratios.
ratios=()
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds (load average $(cut -d' ' -f1 /proc/loadavg))"
    for method in post get; do
        if [ "$method" = post ]; then
            sotto_args=(post "coaps://127.0.0.1:$sotto_port/mb/post" --payload "$payload")
            libcoap_args=(post "coaps://127.0.0.1:$libcoap_port/post" --payload "$payload")
            label=POST
        else
            sotto_args=(get "coaps://127.0.0.1:$sotto_port/mb/get")
            libcoap_args=(get "coaps://127.0.0.1:$libcoap_port/get")
            label="GET "
        fi
        if (( round % 2 == 1 )); then
            run "$label sotto coap-server (SQLite)" "${sotto_args[@]}"; sotto_rate=$rate
            run "$label coap-server-openssl" "${libcoap_args[@]}"; libcoap_rate=$rate
        else
            run "$label coap-server-openssl" "${libcoap_args[@]}"; libcoap_rate=$rate
            run "$label sotto coap-server (SQLite)" "${sotto_args[@]}"; sotto_rate=$rate
        fi
        ratios+=("$method:$sotto_rate:$libcoap_rate")
    done
done

python3 - "${ratios[@]}" <<'EOF'
import statistics, sys
for method in ("post", "get"):
    pairs = [tuple(map(float, item.split(":")[1:])) for item in sys.argv[1:] if item.startswith(method + ":")]
    each = [s / l if l else 0 for s, l in pairs]
    ratio = statistics.median(each)
    rounds = " ".join(f"{r:.2f}" for r in each)
    print(f"ratio {method.upper():<4} sotto/libcoap = {ratio:.2f}, median of {len(each)} round(s) [{rounds}] "
          f"({'meets' if ratio >= 0.9 else 'below'} the 0.9 target)")
EOF
