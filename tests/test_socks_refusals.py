"""Refusals carry the right SOCKS5 reply codes (RFC 1928 section 6, RFC 1929 section 2),
checked with raw bytes on a socket."""

from sotto_e2e import LOOPBACK, ProfileSpec, RawSocks, entry_config, free_port, start_pair, wait_closed

CONNECT, BIND, UDP_ASSOCIATE = 1, 2, 3


def test_an_unknown_host_without_allow_direct_is_refused_with_0x02(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"

        rep, _ = client.request(CONNECT, "elsewhere.example", 80)

        assert rep == 0x02, f"reply 0x{rep:02x}"
        wait_closed(client.sock, 5)
    counters = pair.entry.counters()
    assert counters["socks_refused"] >= 1, counters


def test_an_unknown_ip_address_without_allow_direct_is_refused_with_0x02(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"
        rep, _ = client.request(CONNECT, LOOPBACK, pair.http.port)
        assert rep == 0x02, f"reply 0x{rep:02x}"


def test_bind_is_refused_with_0x07(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"

        rep, _ = client.request(BIND, "home", 80)

        assert rep == 0x07, f"reply 0x{rep:02x}"
        wait_closed(client.sock, 5)


def test_an_unknown_command_is_refused_with_0x07_or_closed(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"
        client.send(b"\x05\x09\x00\x03\x04home\x00\x50")
        data, _ = wait_closed(client.sock, 5)
        assert data[:2] in (b"", b"\x05\x07"), data
    pair.assert_http_works()


def test_a_wrong_password_gets_status_0x01_and_a_close(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x02") == b"\x05\x02"

        status = client.authenticate("alice", "not-the-password")

        assert status[0] == 0x01 and status[1] != 0x00, status
        data, _ = wait_closed(client.sock, 5)
        assert data == b""
    assert pair.entry.counters()["socks_auth_failures"] >= 1
    pair.assert_http_works()


def test_an_unknown_profile_name_gets_a_failure_status(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x02") == b"\x05\x02"
        status = client.authenticate("mallory", "x")
        assert status[0] == 0x01 and status[1] != 0x00, status
        wait_closed(client.sock, 5)


def test_the_right_password_and_a_profile_without_password_are_accepted(world):
    pair = start_pair(world)
    for user, password in (("alice", "wonderland"), ("bob", "whatever it is")):
        with RawSocks(pair.socks_port) as client:
            assert client.connect("home", 80, user=user, password=password) == 0


def test_auth_required_refuses_a_client_that_offers_only_no_auth_with_0xff(world):
    pair = start_pair(world, entry_options={"auth": "required"})
    with RawSocks(pair.socks_port) as client:
        reply = client.greet(b"\x00")

        assert reply == b"\x05\xff", reply
        data, _ = wait_closed(client.sock, 5)
        assert data == b""
    with RawSocks(pair.socks_port) as client:
        assert client.connect("home", 80, user="alice", password="wonderland") == 0


def test_a_virtual_port_the_exit_does_not_expose_is_refused_with_0x05(world):
    pair = start_pair(world)
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"

        rep, _ = client.request(CONNECT, "home", 81)

        assert rep == 0x05, f"reply 0x{rep:02x}"
    exit_tunnels = pair.exit.tunnels()
    assert exit_tunnels and exit_tunnels[0]["flowsRefused"] >= 1, exit_tunnels
    pair.assert_http_works()


def test_a_target_that_refuses_is_refused_with_0x05(world):
    closed_port = free_port()
    pair = start_pair(world, extra_exposes=[f"tcp 8081 {LOOPBACK}:{closed_port}"])
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"
        rep, _ = client.request(CONNECT, "home", 8081)
        assert rep == 0x05, f"reply 0x{rep:02x}"


def test_allow_direct_connects_a_non_peer_directly(world):
    pair = start_pair(world, entry_options={"profiles": [ProfileSpec("direct", default=True, allow_direct=True)]})
    with RawSocks(pair.socks_port) as client:
        assert client.greet(b"\x00") == b"\x05\x00"
        rep, _ = client.request(CONNECT, LOOPBACK, pair.tcp_echo.port)
        assert rep == 0x00, f"reply 0x{rep:02x}"
        client.send(b"direct bytes")
        client.sock.settimeout(5)
        assert client.sock.recv(100) == b"direct bytes"


def test_an_unreachable_peer_is_refused_and_the_gateway_stays_up(world):
    """The peer's tunnel listener is down: CONNECT fails with a failure reply, not a hang."""
    keys = world.keys("home")
    socks_port = free_port()
    entry = world.gateway("entry", entry_config(name="entry", peer_port=free_port(), keys=keys, socks_port=socks_port))
    with RawSocks(socks_port, timeout=15) as client:
        assert client.greet(b"\x00") == b"\x05\x00"
        rep, _ = client.request(CONNECT, "home", 80, timeout=15)
        assert rep not in (0x00,), f"reply 0x{rep:02x}"
    assert entry.proc.running()
