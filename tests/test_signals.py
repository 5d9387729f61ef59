"""SIGTERM (and SIGINT) make a gateway exit 0 within a few seconds, its status socket gone."""

import signal

import pytest

from sotto_e2e import RawSocks, RawUDPAssociation, start_pair, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_busy_entry_and_exit_exit_0_on_a_signal_and_remove_their_status_sockets(world, sig):
    pair = start_pair(world)
    association = RawUDPAssociation(pair.socks_port)
    stream = RawSocks(pair.socks_port)
    try:
        association.echo("home", 7, b"busy")
        assert stream.connect("home", 7) == 0      # an open TCP flow during shutdown
        assert pair.entry.status_socket.exists() and pair.exit.status_socket.exists()

        for gateway in (pair.entry, pair.exit):
            code, seconds = gateway.stop(sig, timeout=10)
            assert code == 0, f"{gateway.name} exit code {code} after {sig.name}:\n{gateway.log_text()[-3000:]}"
            assert seconds < 5, f"{gateway.name} took {seconds:.1f} s to exit"
            assert not gateway.status_socket.exists(), f"{gateway.status_socket} is still there"
    finally:
        stream.close()
        association.close()


def test_an_exit_stopped_under_an_entry_leaves_the_entry_running(world):
    pair = start_pair(world)
    pair.assert_http_works()
    code, _ = pair.exit.stop(signal.SIGTERM)
    assert code == 0
    wait_until(lambda: pair.entry.tunnels()[0]["state"] != "established", 10, "the entry to see the tunnel end")
    assert pair.entry.proc.running()
    code, seconds = pair.entry.stop(signal.SIGTERM)
    assert code == 0 and seconds < 5


def test_an_idle_gateway_exits_0_on_sigterm(world):
    pair = start_pair(world)
    code, seconds = pair.exit.stop(signal.SIGTERM)
    assert code == 0 and seconds < 5
    assert not pair.exit.status_socket.exists()
