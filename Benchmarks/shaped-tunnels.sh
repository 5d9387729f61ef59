#!/usr/bin/env bash
# Issue 5's benchmark: CPU and memory of an exit gateway serving N shaped tunnels (default 1,000)
# that are idle at `constant` 10 cells/s each, i.e. 10,000 cells/s each way in total.
#
# On 127.0.0.1 it starts an exit gateway (one service, anonymizer none, udp 7 -> a UDP echo) and
# one load gateway: an ordinary `sotto run` whose config has N peers (all the same exit) and N
# UDP forwards (on 127.0.x.y, one per peer), so it keeps N tunnels, each shaped `constant` both
# ways. One datagram through each forward brings its tunnel up (to a port the exit does not
# expose, so no flow stays open); then nothing but cover cells flows. It reads from /proc the exit's resident memory before the tunnels and
# with them, and its CPU time over a measuring window; the cell rate comes from the exit's own
# counters (`sotto status`, shaping totals). Targets: under 30 % of one core and under 64 KB per
# tunnel. The load gateway's own CPU is printed too (the same shaping code, entry side); both
# share this machine's cores. Then, with the gateways stopped, the floor: sotto-bench cell-pacer
# makes the same packets on as many connections without any Sotto code, and then the same with
# every cell sealed and opened by the tunnel's cell cipher; their CPU over equal windows is
# printed beside the exit's.
#
# Usage: Benchmarks/shaped-tunnels.sh [TUNNELS] [SECONDS]    (defaults 1000 and 30)
# Environment: RATE (cells/s per tunnel, default 10), SOTTO / SOTTO_BENCH (binaries; default the
# release build, built when missing), PERF_OUT=FILE (perf record of the exit over the window).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
case "${1:-}" in
-h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
tunnels=${1:-1000}
seconds=${2:-30}
rate=${RATE:-10}
[[ $tunnels =~ ^[0-9]+$ && $tunnels -ge 1 && $tunnels -le 20000 ]] || { echo "shaped-tunnels.sh: TUNNELS must be 1-20000, got '$tunnels'" >&2; exit 2; }
[[ $seconds =~ ^[0-9]+$ && $seconds -ge 5 && $seconds -le 600 ]] || { echo "shaped-tunnels.sh: SECONDS must be 5-600, got '$seconds'" >&2; exit 2; }
[[ $rate =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "shaped-tunnels.sh: RATE must be a number, got '$rate'" >&2; exit 2; }

source "$ROOT/Benchmarks/lib.sh"
release_binaries shaped-tunnels.sh

work=$(mktemp -d /tmp/sotto-tunnels.XXXXXX)
pids=()
cleanup() {
    stop_pids
    rm -rf "$work"
}
trap cleanup EXIT
umask 077
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mapfile -t ports < <("$bench" free-ports --count 3)
tunnel_port=${ports[0]} echo_port=${ports[1]} forward_port=${ports[2]}
"$sotto" keygen --out "$work/keys" --name exit >/dev/null
"$bench" udp-echo --listen "127.0.0.1:$echo_port" > "$work/echo.log" 2>&1 &
pids+=($!)

cat > "$work/exit.toml" <<EOF
state_dir = "$work/state-exit"
log_level = "warning"
[[profile]]
name = "direct"
anonymizer = "none"
[[service]]
name = "home"
listen = "127.0.0.1:$tunnel_port"
private_key_file = "$work/keys/exit.key"
psk_file = "$work/keys/exit.psk"
expose = ["udp 7 127.0.0.1:$echo_port"]
max_tunnels = $((tunnels + 16))
EOF

# The load gateway: N peers and N forwards on 127.0.X.Y:forward_port (distinct addresses, one port).
python3 - "$work" "$tunnels" "$tunnel_port" "$forward_port" "$rate" > "$work/load.toml" <<'PYEOF'
import sys
work, n, tunnel_port, forward_port, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
print(f'state_dir = "{work}/state-load"\nlog_level = "warning"\n')
print(f'[[profile]]\nname = "shaped"\nanonymizer = "none"\nshaping = "constant"\nrate = {rate}\njitter = 0.2\n')
for i in range(n):
    print(f'[[peer]]\nname = "p{i}"\naddress = "127.0.0.1:{tunnel_port}"\n'
          f'public_key_file = "{work}/keys/exit.pub"\npsk_file = "{work}/keys/exit.psk"\n')
for i in range(n):
    print(f'[[forward]]\nlisten = "udp://127.0.{2 + i // 250}.{1 + i % 250}:{forward_port}"\nto = "p{i}:9"\n')
PYEOF

# VmRSS in KiB and utime+stime in clock ticks of a PID.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kernel_ticks() { awk '{print $15}' "/proc/$1/stat"; }
# Write system calls so far (the floor must make as many as the exit to be a floor).
write_calls() { awk '/^syscw:/ {print $2}' "/proc/$1/io"; }

"$sotto" run --config "$work/exit.toml" > "$work/exit.log" 2>&1 &
exit_pid=$!
pids+=($exit_pid)
"$bench" wait-listen --tcp "127.0.0.1:$tunnel_port" --timeout 30
sleep 2
exit_rss_idle=$(rss_kib "$exit_pid")

"$sotto" run --config "$work/load.toml" > "$work/load.log" 2>&1 &
load_pid=$!
pids+=($load_pid)
"$bench" wait-listen --udp "127.0.$((2 + (tunnels - 1) / 250)).$((1 + (tunnels - 1) % 250)):$forward_port" --timeout 120

totals() {   # prints "live cells_sent cover_received" of the exit's service, from sotto status
    "$sotto" status --config "$work/exit.toml" | python3 -c '
import json, sys
t = [g for g in json.load(sys.stdin).get("shapingTotals", []) if g["side"] == "exit"][0]
s = t["shaping"]
print(t["liveTunnels"], s["realCells"] + s["coverCells"], s["coverCellsReceived"], s["missedSlots"])'
}

# One datagram through every forward brings its tunnel up. The forwards lead to virtual port 9,
# which the exit does not expose: it refuses the flow and keeps no flow state, so what is
# measured is the tunnels alone. Up to 3 rounds, until the exit counts every tunnel.
python3 - "$tunnels" "$forward_port" <<'PYEOF2'
import socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
for i in range(n):
    s.sendto(b"up", (f"127.0.{2 + i // 250}.{1 + i % 250}", port))
    if i % 50 == 49:
        time.sleep(0.05)        # a steady start, not 1,000 handshakes at once
s.close()
PYEOF2
live=0
for _ in $(seq 1 120); do
    read -r live _ _ _ < <(totals)
    [[ $live -ge $tunnels ]] && break
    sleep 1
done
echo "shaped-tunnels: $live of $tunnels tunnels up at the exit" >&2
[[ $live -ge $tunnels ]] || { echo "shaped-tunnels: not every tunnel came up; see $work/load.log" >&2; tail -5 "$work/load.log" >&2; exit 1; }

sleep 5   # past the start-up
read -r live0 sent0 received0 missed0 < <(totals)
ticks0=$(cpu_ticks "$exit_pid"); kticks0=$(kernel_ticks "$exit_pid"); writes0=$(write_calls "$exit_pid"); load_ticks0=$(cpu_ticks "$load_pid"); t0=$(date +%s%N)
if [[ -n "${PERF_OUT:-}" ]]; then
    # A profile of the exit over the window (perf's own sampling costs the exit a little CPU).
    perf record -F 999 -g -p "$exit_pid" -o "$PERF_OUT" -- sleep "$seconds" >/dev/null 2>&1
else
    sleep "$seconds"
fi
ticks1=$(cpu_ticks "$exit_pid"); kticks1=$(kernel_ticks "$exit_pid"); writes1=$(write_calls "$exit_pid"); load_ticks1=$(cpu_ticks "$load_pid"); t1=$(date +%s%N)
read -r live1 sent1 received1 missed1 < <(totals)
exit_rss_loaded=$(rss_kib "$exit_pid")
load_rss=$(rss_kib "$load_pid")
kill "$load_pid" "$exit_pid" 2>/dev/null || true
wait "$load_pid" "$exit_pid" 2>/dev/null || true

# The floor: the same packet pattern (N connections, one cell-size write every 1/RATE s ± 20 %
# each way, one event loop, one 1 ms timer) from sotto-bench cell-pacer, which runs no Sotto code.
# Its listening side's CPU is what the kernel and NIO cost for these packets on this machine.
# Then again with --seal: each write a cell sealed and each cell read opened by the tunnel's own
# cell cipher (swift-crypto), nothing else of Sotto: the floor plus the cryptography.
# pacer_window NAME [ARGS]: runs both sides, sets window="cpu_ticks kernel_ticks write_calls ns"
# of the listening side over the window, stops both.
pacer_window() {
    local name=$1; shift
    local port listen_pid connect_pid t0 t1 c0 c1 k0 k1 w0 w1
    mapfile -t port < <("$bench" free-ports --count 1)
    "$bench" cell-pacer --listen "127.0.0.1:${port[0]}" --rate "$rate" --bytes 514 --lifetime $((seconds + 300)) "$@" > "$work/$name-listen.log" 2>&1 &
    listen_pid=$!
    pids+=($listen_pid)
    "$bench" wait-listen --tcp "127.0.0.1:${port[0]}" --timeout 30 >&2
    "$bench" cell-pacer --connect "127.0.0.1:${port[0]}" --connections "$tunnels" --rate "$rate" --bytes 514 --lifetime $((seconds + 300)) "$@" > "$work/$name-connect.log" 2>&1 &
    connect_pid=$!
    pids+=($connect_pid)
    for _ in $(seq 1 240); do
        grep -q PACER_READY "$work/$name-connect.log" && break
        sleep 0.5
    done
    grep -q PACER_READY "$work/$name-connect.log" || { echo "shaped-tunnels: cell-pacer did not connect; see $work/$name-connect.log" >&2; exit 1; }
    sleep 5
    c0=$(cpu_ticks "$listen_pid"); k0=$(kernel_ticks "$listen_pid"); w0=$(write_calls "$listen_pid"); t0=$(date +%s%N)
    sleep "$seconds"
    c1=$(cpu_ticks "$listen_pid"); k1=$(kernel_ticks "$listen_pid"); w1=$(write_calls "$listen_pid"); t1=$(date +%s%N)
    kill "$connect_pid" "$listen_pid" 2>/dev/null || true
    wait "$connect_pid" "$listen_pid" 2>/dev/null || true
    window="$((c1 - c0)) $((k1 - k0)) $((w1 - w0)) $((t1 - t0))"
}
pacer_window floor
floor=$window
pacer_window sealed --seal
sealed=$window

python3 - <<PYEOF
hz = $(getconf CLK_TCK)
elapsed = ($t1 - $t0) / 1e9
tunnels, live = $tunnels, $live1
cpu = ($ticks1 - $ticks0) / hz / elapsed * 100
kernel = ($kticks1 - $kticks0) / hz / elapsed * 100
load_cpu = ($load_ticks1 - $load_ticks0) / hz / elapsed * 100
sent = ($sent1 - $sent0) / elapsed
received = ($received1 - $received0) / elapsed
writes = ($writes1 - $writes0) / elapsed
per_tunnel = ($exit_rss_loaded - $exit_rss_idle) * 1024 / max(live, 1)
print(f"exit gateway, {live} live shaped tunnels (constant $rate cells/s ±20% each way), {elapsed:.1f} s window:")
print(f"  cells sent     {sent:,.0f}/s   cover cells received {received:,.0f}/s   missed slots {$missed1 - $missed0}   write calls {writes:,.0f}/s")
print(f"  CPU            {cpu:.1f} % of one core, {kernel:.1f} of it in the kernel (loopback TCP charges the sender for the receiver's work too)   (target < 30 %: {'met' if cpu < 30 else 'NOT met'})")
print(f"  resident memory {$exit_rss_idle / 1024:.1f} MiB idle, {$exit_rss_loaded / 1024:.1f} MiB with the tunnels: "
      f"{per_tunnel / 1024:.1f} KiB per tunnel   (target < 64 KB: {'met' if per_tunnel < 64000 else 'NOT met'})")
print(f"load gateway (entry side, same shaping): CPU {load_cpu:.1f} % of one core, resident memory {$load_rss / 1024:.1f} MiB")
def pacer(line):   # "cpu_ticks kernel_ticks write_calls ns" -> CPU %, kernel %, writes/s
    c, k, w, ns = (int(x) for x in line.split())
    return c / hz / (ns / 1e9) * 100, k / hz / (ns / 1e9) * 100, w / (ns / 1e9)
floor, floor_kernel, floor_writes = pacer("$floor")
sealed, sealed_kernel, sealed_writes = pacer("$sealed")
print(f"floor (sotto-bench cell-pacer: the same writes and reads on {tunnels} connections, no Sotto code), {$seconds} s windows:")
print(f"  plain          {floor:.1f} % of one core, {floor_kernel:.1f} of it in the kernel; write calls {floor_writes:,.0f}/s ({floor_writes / writes if writes else 0:.2f} of the exit's)")
print(f"  cells sealed and opened (the tunnel's cell cipher, nothing else): {sealed:.1f} %, {sealed_kernel:.1f} in the kernel; write calls {sealed_writes:,.0f}/s")
print(f"  the exit above the plain floor: {cpu - floor:.1f} % of a core; above the sealed one (shaping, framing, tunnel and flow code): {cpu - sealed:.1f} %")
# On loopback the kernel's share moves between processes and runs (softirq work is charged to
# whichever process is running), while all three make the same system calls: user time compares
# the processes' own work more steadily.
print(f"  user time only: exit {cpu - kernel:.1f} %, floor {floor - floor_kernel:.1f} %, sealed floor {sealed - sealed_kernel:.1f} %")
print(f"RESULT name=shaped-tunnels tunnels={live} cells_per_s={sent:.0f} cpu_percent={cpu:.1f} kernel_percent={kernel:.1f} kib_per_tunnel={per_tunnel / 1024:.1f} "
      f"rss_idle_mib={$exit_rss_idle / 1024:.1f} rss_loaded_mib={$exit_rss_loaded / 1024:.1f} load_cpu_percent={load_cpu:.1f} "
      f"floor_cpu_percent={floor:.1f} floor_kernel_percent={floor_kernel:.1f} sealed_floor_cpu_percent={sealed:.1f} sealed_floor_kernel_percent={sealed_kernel:.1f} "
      f"writes_per_s={writes:.0f} floor_writes_per_s={floor_writes:.0f} sealed_floor_writes_per_s={sealed_writes:.0f}")
PYEOF
