"""Shaping end to end (docs/shaping.md): an entry whose profile asks for `constant` shaping and
an exit that clamps the proposal to its limits. Checked without a capture, through `sotto
status`: both sides apply the same policy, cover cells flow both ways while idle, and real
clients (PySocks UDP, curl) work through the shaped tunnel. Only counts are asserted."""

import os
import time

from sotto_e2e import CELL_SIZE, HELLO, RecordingProxy, sha256, start_pair, wait_until
from test_socks_udp import echo_with_retry, pysocks_udp


def shaping_of(gateway) -> dict:
    tunnels = [t for t in gateway.tunnels() if t.get("state") == "established"]
    assert len(tunnels) == 1, tunnels
    assert "shaping" in tunnels[0], tunnels[0]
    return tunnels[0]["shaping"]


def test_constant_shaping_sends_cover_both_ways_and_carries_udp_and_tcp(world):
    pair = start_pair(world, start_entry=False)
    # The entry's default profile proposes 100 cells/s; the exit's default limit is 50.
    text = pair.entry.config.read_text()
    profile = 'name = "direct"\nanonymizer = "none"\n'
    assert profile in text
    pair.entry.config.write_text(text.replace(profile, profile + 'shaping = "constant"\nrate = 100\njitter = 0.2\n', 1))
    pair.entry.start()

    result = pair.curl("/hello.txt", timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO

    entry, exit_ = shaping_of(pair.entry), shaping_of(pair.exit)
    assert entry["policy"] == exit_["policy"], (entry, exit_)
    assert entry["policy"].startswith("constant 50.0 cells/s"), entry
    assert entry["peerAnswered"] and exit_["peerAnswered"], (entry, exit_)

    # Idle: cover cells keep flowing in both directions.
    before_entry, before_exit = entry, exit_
    time.sleep(2)
    entry, exit_ = shaping_of(pair.entry), shaping_of(pair.exit)
    assert entry["coverCells"] - before_entry["coverCells"] >= 20, (before_entry, entry)
    assert exit_["coverCells"] - before_exit["coverCells"] >= 20, (before_exit, exit_)
    assert exit_["coverCellsReceived"] - before_exit["coverCellsReceived"] >= 20, (before_exit, exit_)
    assert entry["coverCellsReceived"] - before_entry["coverCellsReceived"] >= 20, (before_entry, entry)

    # UDP through PySocks, small and fragmented datagrams, echoed intact.
    s = pysocks_udp(pair.socks_port)
    try:
        echo_with_retry(s, b"shaped-0")
        for i in range(1, 6):
            payload = os.urandom(300 * i * i)
            data, _ = echo_with_retry(s, payload, timeout=10)
            assert data == payload
    finally:
        s.close()

    # A download larger than the shaper's stream queue (256 cells, 124 KB): back-pressure, no loss.
    payload = os.urandom(200_000)
    (pair.www / "shaped.bin").write_bytes(payload)
    out = world.dir / "shaped.bin"
    result = pair.curl("/shaped.bin", "-o", str(out), timeout=90)
    assert result.returncode == 0, result.stderr
    assert sha256(out.read_bytes()) == sha256(payload)

    exit_ = shaping_of(pair.exit)
    entry = shaping_of(pair.entry)
    assert exit_["realCells"] >= 200_000 // 484, exit_
    assert exit_["backPressureEvents"] >= 1, exit_
    assert exit_["datagramsDropped"] == 0 and entry["datagramsDropped"] == 0, (entry, exit_)
    assert entry["addedLatencyP50Ms"] is not None and exit_["addedLatencyP99Ms"] is not None, (entry, exit_)


def test_constant_shaping_sends_the_same_cells_per_second_idle_and_active(world):
    """Issue 5: with `constant`, an observer of the tunnel's TCP connection (a relay that records
    every read, RecordingProxy) counts the same cells per second in an idle period and in an
    active one, in both directions, within the bound the jitter allows; the datagrams sent
    meanwhile arrive intact and in order."""
    rate, jitter, period = 20.0, 0.2, 5.0
    proxy = world.server(RecordingProxy(0))
    pair = start_pair(world, start_entry=False, peer_via=proxy.port)
    proxy.target_port = pair.tunnel_port
    text = pair.entry.config.read_text()
    profile = 'name = "direct"\nanonymizer = "none"\n'
    pair.entry.config.write_text(text.replace(profile, profile + f'shaping = "constant"\nrate = {rate}\njitter = {jitter}\n', 1))
    pair.entry.start()

    s = pysocks_udp(pair.socks_port)
    try:
        echo_with_retry(s, b"wake-up")          # brings the tunnel up
        time.sleep(1.0)                         # past the handshake and the first reply
        before = shaping_of(pair.entry)["missedSlots"], shaping_of(pair.exit)["missedSlots"]

        idle_start = time.monotonic()
        time.sleep(period)
        idle_end = time.monotonic()

        # Active: ten 300-byte datagrams a second (one cell each way), half the shaped capacity.
        received: list[bytes] = []
        sent: list[bytes] = []
        active_start = time.monotonic()
        s.settimeout(0.05)
        for i in range(int(period * 10)):
            payload = f"{i:04d}".encode() + os.urandom(296)
            sent.append(payload)
            s.sendto(payload, ("home", 7))
            deadline = active_start + (i + 1) * 0.1
            while time.monotonic() < deadline:
                try:
                    data, _ = s.recvfrom(65535)
                    received.append(data)
                except OSError:
                    pass
        active_end = time.monotonic()
        s.settimeout(5)
        for _ in range(len(sent) - len(received)):      # bounded: the ones still in flight
            try:
                received.append(s.recvfrom(65535)[0])
            except OSError:
                break
    finally:
        s.close()

    missed = shaping_of(pair.entry)["missedSlots"] - before[0], shaping_of(pair.exit)["missedSlots"] - before[1]
    # Each interval lies in [(1 - jitter) / rate, (1 + jitter) / rate]: over a period the count
    # lies within these bounds (+-1 for the slots cut by the period's edges); skipped slots
    # (a stalled loop, counted by the shaper) lower it.
    low = period * rate / (1 + jitter) - 1
    high = period * rate / (1 - jitter) + 1
    counts = {}
    for name, (start, end) in (("idle", (idle_start, idle_end)), ("active", (active_start, active_end))):
        up, down = proxy.bytes_between(start, end)
        counts[name] = (up / CELL_SIZE, down / CELL_SIZE)
    for name, (up, down) in counts.items():
        assert low - missed[0] <= up <= high, (name, counts, low, high, missed)
        assert low - missed[1] <= down <= high, (name, counts, low, high, missed)
    # The data went through intact and in order (UDP on loopback: nothing may be lost here).
    assert received == sent, (len(received), len(sent))
