"""Limits of the exit service: max_flows_per_tunnel and max_tunnels refuse and count."""

import socket
import time

from sotto_e2e import CELL_SIZE, LOOPBACK, ProfileSpec, RawSocks, RawUDPAssociation, start_pair, wait_closed


def test_flows_beyond_max_flows_per_tunnel_are_refused_and_counted(world):
    pair = start_pair(world, exit_options={"max_flows": 4})
    held = []
    try:
        for i in range(4):
            client = RawSocks(pair.socks_port)
            held.append(client)
            assert client.connect("home", 7) == 0, f"flow {i + 1} of 4 refused"
            client.send(b"x")
            client.sock.settimeout(5)
            assert client.sock.recv(1) == b"x"

        with RawSocks(pair.socks_port) as fifth:
            assert fifth.greet(b"\x00") == b"\x05\x00"
            rep, _ = fifth.request(1, "home", 7)
            assert rep != 0x00, "a fifth flow was accepted with max_flows_per_tunnel = 4"
            assert rep == 0x01, f"reply 0x{rep:02x} (limit reached should be a general failure)"

        exit_tunnel = pair.exit.tunnels()[0]
        assert exit_tunnel["flowLimitHits"] >= 1, exit_tunnel
        assert exit_tunnel["flowsOpen"] == 4, exit_tunnel

        # A UDP flow is a flow too.
        association = RawUDPAssociation(pair.socks_port)
        try:
            association.send("home", 7, b"over the limit")
            assert association.receive(1.5) is None
        finally:
            association.close()
        assert pair.exit.tunnels()[0]["flowLimitHits"] >= 2

        # Closing two flows makes room again.
        for client in held[:2]:
            client.close()
        held = held[2:]
        deadline = time.monotonic() + 10
        while pair.exit.tunnels()[0]["flowsOpen"] > 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        with RawSocks(pair.socks_port) as again:
            assert again.connect("home", 7) == 0
    finally:
        for client in held:
            client.close()
    pair.assert_http_works()


def test_tunnels_beyond_max_tunnels_are_closed_at_once_and_counted(world):
    pair = start_pair(world, exit_options={"max_tunnels": 2})
    pair.assert_http_works()                        # tunnel 1: the entry's
    holder = socket.create_connection((LOOPBACK, pair.tunnel_port), timeout=5)   # tunnel 2: handshaking
    try:
        time.sleep(0.2)
        before = pair.exit.counters()["tunnel_limit_hits"]
        started = time.monotonic()
        extra = socket.create_connection((LOOPBACK, pair.tunnel_port), timeout=5)
        try:
            data, seconds = wait_closed(extra, 3)
        finally:
            extra.close()
        assert data == b""
        assert seconds < 0.45, f"the tunnel past the limit stayed open {seconds:.2f} s"
        assert time.monotonic() - started < 1
        pair.exit.wait_counter("tunnel_limit_hits", before + 1)
        pair.assert_http_works()
    finally:
        holder.close()


def test_a_second_entry_profile_past_max_tunnels_is_refused_while_the_first_works(world):
    pair = start_pair(world, exit_options={"max_tunnels": 1},
                      entry_options={"profiles": [ProfileSpec("direct", default=True), ProfileSpec("bob")]})
    pair.assert_http_works()

    result = pair.curl("/hello.txt", "--proxy-user", "bob:x", timeout=20)

    assert result.returncode != 0, "a second tunnel got through with max_tunnels = 1"
    assert pair.exit.counters()["tunnel_limit_hits"] >= 1
    assert len(pair.exit.tunnels()) == 1
    pair.assert_http_works()


def test_the_tunnel_limit_frees_up_when_a_tunnel_ends(world):
    pair = start_pair(world, exit_options={"max_tunnels": 1})
    probe = socket.create_connection((LOOPBACK, pair.tunnel_port), timeout=5)
    probe.sendall(bytes(CELL_SIZE))          # refused after 0.5-3 s, then the slot is free
    wait_closed(probe, 6)
    probe.close()
    pair.assert_http_works(timeout=20)
