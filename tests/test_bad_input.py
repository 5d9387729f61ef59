"""Bad input at every door, while good clients keep being served: malformed SOCKS greetings
and requests, bad SOCKS UDP datagrams, garbage and truncated tunnel handshakes (the exit
answers nothing and closes after 0.5-3 s), forged cells, and a replayed first handshake
message. After each, a good request still works and `sotto status` shows the counters moved."""

import os
import socket
import time

import pytest

from sotto_e2e import (CELL_SIZE, LOOPBACK, RawSocks, RawUDPAssociation, RecordingProxy, recv_exact,
                       socks_udp_header, start_pair, wait_closed, wait_until)

# --- SOCKS TCP -----------------------------------------------------------------------------------

MALFORMED_OPENINGS = {
    "socks4 request": b"\x04\x01\x00\x50\x7f\x00\x00\x01user\x00",
    "http request": b"GET / HTTP/1.1\r\nHost: home\r\n\r\n",
    "tls client hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),
    "garbage": bytes([0x99]) + os.urandom(200),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_OPENINGS))
def test_a_malformed_greeting_is_closed_counted_and_good_clients_go_on(world, name):
    pair = start_pair(world)
    pair.assert_http_works()
    before = pair.entry.counters()["socks_malformed"]

    with RawSocks(pair.socks_port) as client:
        client.send(MALFORMED_OPENINGS[name])
        data, _ = wait_closed(client.sock, 5)

    assert not data.startswith(b"\x05\x00"), data
    pair.entry.wait_counter("socks_malformed", before + 1)
    pair.assert_http_works()


def test_a_greeting_with_zero_methods_gets_no_acceptable_method_or_a_close(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        client.send(b"\x05\x00")
        data, _ = wait_closed(client.sock, 5)
    assert data in (b"", b"\x05\xff"), data
    pair.assert_http_works()


def test_truncated_greetings_and_requests_do_not_disturb_good_clients(world):
    pair = start_pair(world)
    truncated = [
        b"\x05",                                  # version only
        b"\x05\x03\x00",                          # claims 3 methods, gives 1
        b"\x05\x01\x00\x05\x01\x00\x03\x04ho",    # request cut inside the domain
        b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00",  # request cut inside an IPv4 address
    ]
    for opening in truncated:
        with RawSocks(pair.socks_port) as client:
            client.send(opening)
            client.sock.shutdown(socket.SHUT_WR)
            data, _ = wait_closed(client.sock, 5)
            # Only the method selection may have come back; never a CONNECT reply.
            assert data in (b"", b"\x05\x00"), (opening, data)
    # Half-open clients that stay silent do not block others.
    idle = [RawSocks(pair.socks_port) for _ in range(5)]
    try:
        for s in idle:
            s.send(b"\x05\x01")
        pair.assert_http_works()
    finally:
        for s in idle:
            s.close()
    pair.assert_http_works()


@pytest.mark.parametrize("request_bytes", [
    b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50",   # wrong version in the request
    b"\x05\x01\x00\x09\x7f\x00\x00\x01\x00\x50",   # unknown address type
    b"\x05\x01\x07\x01\x7f\x00\x00\x01\x00\x50",   # reserved byte not zero
], ids=["wrong-version", "bad-address-type", "reserved-byte"])
def test_a_malformed_request_is_closed_and_counted(world, request_bytes):
    pair = start_pair(world)
    before = pair.entry.counters()["socks_malformed"]
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"
        client.send(request_bytes)
        data, _ = wait_closed(client.sock, 5)
    # No success reply; a failure reply before the close is fine.
    assert not data.startswith(b"\x05\x00"), data
    counters = pair.entry.counters()
    assert counters["socks_malformed"] + counters["socks_refused"] > before, counters
    pair.assert_http_works()


def test_a_malformed_username_password_request_fails_and_is_counted(world):
    pair = start_pair(world)
    before = pair.entry.counters()
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x02") == b"\x05\x02"
        client.send(b"\x07\x05alice\x0awonderland")  # sub-negotiation version 7, not 1
        data, _ = wait_closed(client.sock, 5)
    assert data[:1] in (b"", b"\x01", b"\x07") and data[1:2] != b"\x00", data
    after = pair.entry.counters()
    assert (after["socks_malformed"] + after["socks_auth_failures"]
            > before["socks_malformed"] + before["socks_auth_failures"]), after
    pair.assert_http_works()


# --- SOCKS UDP -----------------------------------------------------------------------------------


def test_udp_datagrams_with_frag_or_garbage_headers_are_dropped_and_counted(world):
    pair = start_pair(world)
    association = RawUDPAssociation(pair.socks_port)
    try:
        association.echo("home", 7, b"before")
        before = pair.entry.counters()

        association.send("home", 7, b"fragment one", frag=1)
        association.send("home", 7, b"fragment last", frag=0x81)
        association.send_raw(b"\x00")                                   # 1 byte
        association.send_raw(b"\x00\x00\x00")                           # header cut after FRAG
        association.send_raw(b"\x00\x00\x00\x09" + os.urandom(20))       # unknown address type
        association.send_raw(b"\x00\x00\x00\x03\x20home")                # domain longer than the datagram
        association.send_raw(b"\x00\x00\x00\x01\x7f\x00")                # IPv4 address cut

        assert association.receive(1.0) is None, "a dropped datagram was answered"
        pair.entry.wait_counter("udp_fragments_dropped", before["udp_fragments_dropped"] + 2)
        pair.entry.wait_counter("udp_malformed_dropped", before["udp_malformed_dropped"] + 5)
        assert association.echo("home", 7, b"after") == b"after"
    finally:
        association.close()
    assert pair.udp_echo.received >= 2
    pair.assert_http_works()


def test_udp_datagrams_from_a_foreign_port_are_dropped(world):
    pair = start_pair(world)
    association = RawUDPAssociation(pair.socks_port)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((LOOPBACK, 0))
    try:
        association.echo("home", 7, b"mine")
        before = pair.entry.counters()["udp_foreign_source_dropped"]
        received_before = pair.udp_echo.received
        stranger.sendto(socks_udp_header("home", 7) + b"not yours", association.relay)
        pair.entry.wait_counter("udp_foreign_source_dropped", before + 1)
        time.sleep(0.3)
        assert pair.udp_echo.received == received_before
    finally:
        stranger.close()
        association.close()


# --- tunnel listener -----------------------------------------------------------------------------


def probe_tunnel_listener(port: int, payload: bytes, close_within: float) -> tuple[bytes, float]:
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    try:
        sock.sendall(payload)
        return wait_closed(sock, close_within)
    finally:
        sock.close()


@pytest.mark.parametrize("size", [CELL_SIZE, 2 * CELL_SIZE, 4096])
def test_a_garbage_handshake_gets_no_reply_and_a_close_after_half_a_second_to_three(world, size):
    pair = start_pair(world)
    pair.assert_http_works()
    before = pair.exit.counters()["tunnel_handshake_failures"]

    data, seconds = probe_tunnel_listener(pair.tunnel_port, os.urandom(size), close_within=6)

    assert data == b"", f"the exit answered {len(data)} bytes to garbage"
    assert 0.4 <= seconds <= 3.6, f"closed after {seconds:.2f} s"
    pair.exit.wait_counter("tunnel_handshake_failures", before + 1)
    assert "refused tunnel handshake" in pair.exit.log_text() or "127.0.0.1" in pair.exit.log_text()
    pair.assert_http_works()
    pair.assert_udp_echo_works()


def test_several_probes_at_once_get_no_reply(world):
    pair = start_pair(world)
    socks_ = [socket.create_connection((LOOPBACK, pair.tunnel_port), timeout=5) for _ in range(8)]
    try:
        for s in socks_:
            s.sendall(os.urandom(CELL_SIZE))
        for s in socks_:
            data, seconds = wait_closed(s, 6)
            assert data == b"" and seconds <= 3.6
    finally:
        for s in socks_:
            s.close()
    pair.exit.wait_counter("tunnel_handshake_failures", 8)
    pair.assert_http_works()


def test_a_truncated_handshake_is_closed_after_the_handshake_timeout_without_a_reply(world):
    """handshake_timeout_seconds is 3 in these configs; then a random 0.5-3 s delay."""
    pair = start_pair(world)
    before = pair.exit.counters()["tunnel_handshake_failures"]

    data, seconds = probe_tunnel_listener(pair.tunnel_port, os.urandom(CELL_SIZE // 2), close_within=10)

    assert data == b""
    assert 2.5 <= seconds <= 7.5, f"closed after {seconds:.2f} s"
    pair.exit.wait_counter("tunnel_handshake_failures", before + 1)
    pair.assert_http_works()


def test_a_silent_connection_is_closed_after_the_handshake_timeout(world):
    pair = start_pair(world)
    sock = socket.create_connection((LOOPBACK, pair.tunnel_port), timeout=5)
    try:
        data, seconds = wait_closed(sock, 10)
    finally:
        sock.close()
    assert data == b"" and 2.5 <= seconds <= 7.5, (data, seconds)


def test_a_replayed_first_message_never_crashes_anything_and_a_forged_cell_ends_it(world):
    """A recorded first handshake message, sent again: the exit may answer (NKpsk0 cannot tell
    a replay) or refuse, but then a forged cell on that connection must end it, counted."""
    proxy = None
    pair = start_pair(world, start_entry=False)
    proxy = world.server(RecordingProxy(pair.tunnel_port))
    # The entry reaches the exit through the recording proxy.
    text = pair.entry.config.read_text().replace(f"127.0.0.1:{pair.tunnel_port}", f"127.0.0.1:{proxy.port}")
    pair.entry.config.write_text(text)
    pair.entry.start()
    pair.assert_http_works()
    wait_until(lambda: proxy.first_messages, 5, "the proxy to record a first message")
    recorded = proxy.first_messages[0]
    before = pair.exit.counters()

    sock = socket.create_connection((LOOPBACK, pair.tunnel_port), timeout=5)
    try:
        sock.sendall(recorded)
        try:
            answer = recv_exact(sock, CELL_SIZE, timeout=4)
        except (EOFError, TimeoutError):
            answer = b""
        print(f"replayed first message: {'answered' if answer else 'refused'}")
        if answer:
            # Accepted: a forged cell must close the tunnel and count as a cell failure.
            sock.sendall(os.urandom(CELL_SIZE))
            data, _ = wait_closed(sock, 5)
            assert data == b"", "the exit answered a forged cell"
            pair.exit.wait_counter("cell_authentication_failures", before["cell_authentication_failures"] + 1)
        else:
            wait_closed(sock, 5)
            pair.exit.wait_counter("tunnel_handshake_failures", before["tunnel_handshake_failures"] + 1)
    finally:
        sock.close()
    assert pair.exit.proc.running() and pair.entry.proc.running()
    pair.assert_http_works()
    pair.assert_udp_echo_works()


def test_a_cell_corrupted_in_transit_ends_the_tunnel_and_the_entry_reconnects(world):
    pair = start_pair(world, start_entry=False)
    proxy = world.server(RecordingProxy(pair.tunnel_port))
    text = pair.entry.config.read_text().replace(f"127.0.0.1:{pair.tunnel_port}", f"127.0.0.1:{proxy.port}")
    pair.entry.config.write_text(text)
    pair.entry.start()
    pair.assert_http_works()
    before = pair.exit.counters()["cell_authentication_failures"]

    proxy.corrupt_next_cell.set()
    pair.curl("/hello.txt", timeout=10)   # carries the corrupted cell; may fail
    wait_until(proxy.corrupted.is_set, 10, "the proxy to corrupt a cell")

    pair.exit.wait_counter("cell_authentication_failures", before + 1)
    pair.assert_http_works(timeout=20)
    assert pair.entry.counters()["tunnel_reconnects"] >= 1


@pytest.mark.parametrize("mismatch", ["wrong-psk", "wrong-server-key", "other-cell-size"])
def test_an_entry_with_the_wrong_keys_gets_no_tunnel_and_no_reply(world, mismatch):
    """A misconfigured entry is refused like any prober: the exit answers nothing, counts it,
    and keeps serving the right entry."""
    import dataclasses
    from sotto_e2e import entry_config, free_port, RawSocks

    pair = start_pair(world)
    pair.assert_http_works()
    home, other = world.keys("home"), world.keys("other")
    keys, peer_extra = home, ""
    if mismatch == "wrong-psk":
        keys = dataclasses.replace(home, psk_file=other.psk_file)
    elif mismatch == "wrong-server-key":
        keys = dataclasses.replace(home, public_file=other.public_file)
    else:
        peer_extra = "cell_size = 1024"
    before = pair.exit.counters()["tunnel_handshake_failures"]
    socks_port = free_port()
    world.gateway("wrong", entry_config(name="wrong", peer_port=pair.tunnel_port, keys=keys, socks_port=socks_port,
                                        peer_extra=peer_extra))

    with RawSocks(socks_port, timeout=15) as client:
        assert client.greet(b"\x00") == b"\x05\x00"
        rep, _ = client.request(1, "home", 80, timeout=15)
    assert rep != 0x00, "a tunnel with the wrong keys carried a connection"
    pair.exit.wait_counter("tunnel_handshake_failures", before + 1)
    assert "refused tunnel handshake" in pair.exit.log_text()
    pair.assert_http_works()
