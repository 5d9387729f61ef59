"""The exit restarts: the entry reconnects by itself, without a restart of its own."""

import os
import signal
import time

from sotto_e2e import Gateway, RawUDPAssociation, start_pair, wait_until


def restart(gateway: Gateway) -> None:
    code, seconds = gateway.stop(signal.SIGTERM)
    assert code == 0, f"{gateway.name} exited {code} on SIGTERM"
    gateway.start()


def test_udp_echo_works_again_after_the_exit_restarts(world):
    pair = start_pair(world)
    association = RawUDPAssociation(pair.socks_port)
    try:
        assert association.echo("home", 7, b"before the restart") == b"before the restart"
        entry_pid = pair.entry.proc.pid

        pair.exit.stop(signal.SIGTERM)
        wait_until(lambda: pair.entry.tunnels() and pair.entry.tunnels()[0]["state"] != "established", 10,
                   "the entry to notice the tunnel is gone")
        time.sleep(1.0)    # let the entry fail a reconnect or two against the closed port
        pair.exit.start()

        payload = b"after the restart " + os.urandom(4).hex().encode()
        assert association.echo("home", 7, payload, timeout=20) == payload
        assert pair.entry.proc.pid == entry_pid and pair.entry.proc.running()
    finally:
        association.close()
    counters = pair.entry.counters()
    assert counters["tunnel_reconnects"] >= 1, counters
    assert [t["state"] for t in pair.entry.tunnels()] == ["established"]


def test_tcp_works_again_after_the_exit_restarts_twice(world):
    pair = start_pair(world)
    pair.assert_http_works()
    for _ in range(2):
        restart(pair.exit)
        pair.assert_http_works(timeout=20)


def test_the_udp_forward_keeps_working_across_an_exit_restart(world):
    """A forward's flow is re-opened on the new tunnel: the same client socket gets answers."""
    import socket
    pair = start_pair(world, forwards=[("udp", 7)])
    port = pair.forwards["udp 7"]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))

    def echo(payload: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            client.sendto(payload, ("127.0.0.1", port))
            client.settimeout(0.5)
            try:
                while True:
                    data, _ = client.recvfrom(65535)
                    if data == payload:
                        return True
            except socket.timeout:
                continue
        return False

    try:
        assert echo(b"one", 10)
        restart(pair.exit)
        assert echo(b"two", 20), "no echo through the forward after the exit restarted"
    finally:
        client.close()
