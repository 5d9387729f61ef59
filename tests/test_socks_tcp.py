"""SOCKS5 CONNECT through the tunnel with curl, a real client: peer name + virtual port, a
large file intact, and profile selection by RFC 1929 username/password."""

import os
import socket
import threading

from sotto_e2e import HELLO, RawSocks, sha256, start_pair


def test_curl_gets_a_file_by_peer_name_and_virtual_port(world):
    pair = start_pair(world)

    result = pair.curl("/hello.txt")

    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    tunnels = pair.entry.tunnels()
    assert [t["state"] for t in tunnels] == ["established"], tunnels
    assert tunnels[0]["streamBytesReceived"] >= len(HELLO)


def test_a_5_mb_file_arrives_intact(world):
    pair = start_pair(world)
    payload = os.urandom(5 * 1024 * 1024)
    (pair.www / "big.bin").write_bytes(payload)

    out = world.dir / "got.bin"
    result = pair.curl("/big.bin", "-o", str(out), timeout=120)

    assert result.returncode == 0, result.stderr
    got = out.read_bytes()
    assert len(got) == len(payload)
    assert sha256(got) == sha256(payload)
    exit_tunnels = pair.exit.tunnels()
    assert exit_tunnels and exit_tunnels[0]["streamBytesSent"] >= len(payload), exit_tunnels


def test_a_5_mb_upload_arrives_intact_through_a_tcp_echo(world):
    """Both directions at once: bytes sent to the exit's TCP echo come back unchanged."""
    pair = start_pair(world)
    payload = os.urandom(5 * 1024 * 1024)
    with RawSocks(pair.socks_port, timeout=30) as client:
        assert client.connect("home", 7) == 0
        sender = threading.Thread(target=client.sock.sendall, args=(payload,), daemon=True)
        sender.start()
        received = bytearray()
        client.sock.settimeout(30)
        while len(received) < len(payload):
            chunk = client.sock.recv(1 << 20)
            assert chunk, f"closed after {len(received)} bytes"
            received += chunk
        sender.join(30)
        client.sock.shutdown(socket.SHUT_WR)
    assert sha256(bytes(received)) == sha256(payload)


def test_proxy_user_selects_a_profile_with_its_password(world):
    pair = start_pair(world)

    result = pair.curl("/hello.txt", "--proxy-user", "alice:wonderland")

    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    names = sorted(t["name"] for t in pair.entry.tunnels())
    assert names == ["alice->home"], names


def test_each_profile_gets_its_own_tunnel(world):
    pair = start_pair(world)

    assert pair.curl("/hello.txt").stdout == HELLO
    assert pair.curl("/hello.txt", "--proxy-user", "bob:anything").stdout == HELLO

    names = sorted(t["name"] for t in pair.entry.tunnels())
    assert names == ["bob->home", "direct->home"], names
    assert len(pair.exit.tunnels()) == 2


def test_curl_with_a_wrong_password_fails(world):
    pair = start_pair(world)

    result = pair.curl("/hello.txt", "--proxy-user", "alice:not-the-password")

    assert result.returncode != 0
    assert pair.entry.counters()["socks_auth_failures"] >= 1
