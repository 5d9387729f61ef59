"""SOCKS5 UDP ASSOCIATE through the tunnel with PySocks, a real client, to a UDP echo behind
the exit: small datagrams, and a 60,000-byte datagram that is fragmented into cells and must
come back byte-identical."""

import os
import socket
import time

import socks

from sotto_e2e import LOOPBACK, RawUDPAssociation, start_pair


def pysocks_udp(socks_port: int) -> socks.socksocket:
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, LOOPBACK, socks_port)
    s.settimeout(5)
    return s


def echo_with_retry(s: socks.socksocket, payload: bytes, timeout: float = 15.0) -> tuple[bytes, tuple]:
    """UDP may be dropped while the tunnel comes up: send again until the echo arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.sendto(payload, ("home", 7))
        s.settimeout(2)
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                data, source = s.recvfrom(65535)
            except socket.timeout:
                break
            if data == payload:
                return data, source
    raise AssertionError(f"no echo of a {len(payload)}-byte datagram within {timeout} s")


def test_small_datagrams_echo_through_pysocks(world):
    pair = start_pair(world)
    s = pysocks_udp(pair.socks_port)
    try:
        data, source = echo_with_retry(s, b"ping-0")
        assert data == b"ping-0"
        assert source in (("home", 7), (b"home", 7)), source
        for i in range(1, 20):
            payload = f"ping-{i}".encode() * (i + 1)
            s.sendto(payload, ("home", 7))
            s.settimeout(5)
            got, _ = s.recvfrom(65535)
            assert got == payload
    finally:
        s.close()
    entry = pair.entry.tunnels()[0]
    assert entry["datagramsSent"] >= 20 and entry["datagramsReceived"] >= 20, entry


def test_a_60000_byte_datagram_comes_back_byte_identical(world):
    pair = start_pair(world)
    s = pysocks_udp(pair.socks_port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        echo_with_retry(s, b"warm-up")
        for _ in range(3):
            payload = os.urandom(60_000)
            data, _ = echo_with_retry(s, payload, timeout=10)
            assert len(data) == 60_000
            assert data == payload
    finally:
        s.close()
    assert pair.udp_echo.received >= 4


def test_an_empty_and_a_max_size_datagram(world):
    """65,507 bytes is the largest datagram the protocol carries (less the SOCKS header here:
    the client's datagram to the relay holds both)."""
    pair = start_pair(world)
    association = RawUDPAssociation(pair.socks_port)
    try:
        association.echo("home", 7, b"warm-up")
        largest = os.urandom(65_507 - 10 - 20)   # room for the SOCKS header (domain "home")
        assert association.echo("home", 7, largest) == largest
        association.send("home", 7, b"")
        got = association.receive(5)
        assert got is not None and got[2] == b"", got
    finally:
        association.close()


def test_each_destination_and_client_is_its_own_flow_at_the_exit(world):
    """One local UDP socket per flow at the exit, so the target sees one peer per client."""
    pair = start_pair(world)
    clients = [pysocks_udp(pair.socks_port) for _ in range(3)]
    try:
        for i, s in enumerate(clients):
            echo_with_retry(s, f"client {i}".encode())
    finally:
        for s in clients:
            s.close()
    assert len(pair.udp_echo.sources) == 3, pair.udp_echo.sources
