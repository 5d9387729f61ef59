"""A private Tor network on 127.0.0.1 (`sotto testnet tor`) carries an onion service end to end:
ADD_ONION on the onion host's control port, the descriptor upload (HS_DESC UPLOADED), and an HTTP
fetch of http://<id>.onion/ through the client's SocksPort. The numbers the gateway work depends on
are measured and printed: bootstrap time, onion reachability time, memory, one whole cycle."""

from __future__ import annotations

import http.server
import re
import secrets
import subprocess
import threading
import time

import pytest

import tornet

# Bounds for the waits below; DESIGN.md measured 2-3 s for the upload and first fetch.
DESCRIPTOR_UPLOAD_TIMEOUT = 60
FETCH_TIMEOUT = 60
TOR_PROCESSES = 8  # 3 authorities, 3 relays, a client, an onion host

METRICS = tornet.METRICS  # printed by conftest.py's terminal summary


class _Body(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    """An HTTP server on 127.0.0.1 that answers every GET with a fresh random token."""
    token = secrets.token_hex(16)
    handler = type("TokenHandler", (_Body,), {"body": token.encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], token
    server.shutdown()
    server.server_close()


def _log_tail(net: tornet.Testnet, node: str, lines: int = 25) -> str:
    path = net.dir / "nodes" / node / "notice.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"


def test_client_and_onion_host_report_bootstrap_done_over_cookie_authenticated_control_ports(testnet):
    for port, cookie in ((testnet.control_port, testnet.cookie), (testnet.onion_control_port, testnet.onion_cookie)):
        control = tornet.ControlConnection.open(port)
        try:
            control.authenticate_cookie(cookie)
            phase = control.command("GETINFO status/bootstrap-phase").values()["status/bootstrap-phase"]
        finally:
            control.close()
        assert "PROGRESS=100" in phase and "TAG=done" in phase, f"control port {port}: {phase}"


def test_detached_onion_service_is_reachable_through_the_client_socks_port_until_deleted(testnet, http_server):
    port, token = http_server
    service_id = None
    control = tornet.ControlConnection.open(testnet.onion_control_port)
    try:
        control.authenticate_cookie(testnet.onion_cookie)
        control.command("SETEVENTS HS_DESC")
        added_at = time.monotonic()
        reply = control.command(f"ADD_ONION NEW:ED25519-V3 Flags=Detach,DiscardPK Port=80,127.0.0.1:{port}")
        service_id = reply.values().get("ServiceID", "")
        assert re.fullmatch(r"[a-z2-7]{56}", service_id), f"ADD_ONION reply without a v3 ServiceID: {reply}"
        try:
            control.wait_event(re.compile(rf"^HS_DESC UPLOADED {service_id} "), DESCRIPTOR_UPLOAD_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"no HS_DESC UPLOADED for {service_id} within {DESCRIPTOR_UPLOAD_TIMEOUT} s; events: "
                        f"{control.events}\n{_log_tail(testnet, 'onionhost')}", pytrace=False)
        METRICS["ADD_ONION -> HS_DESC UPLOADED"] = f"{time.monotonic() - added_at:.1f} s"
    finally:
        # Flags=Detach: the service must outlive this connection (DESIGN.md pitfall).
        control.close()

    url = f"http://{service_id}.onion/"
    deadline = time.monotonic() + FETCH_TIMEOUT
    attempts, last = 0, None
    while time.monotonic() < deadline:
        attempts += 1
        last = subprocess.run(["curl", "-sS", "--max-time", "15", "--socks5-hostname",
                               f"127.0.0.1:{testnet.socks_port}", url],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if last.returncode == 0:
            break
        time.sleep(0.5)
    assert last is not None and last.returncode == 0, (
        f"{url} not reachable within {FETCH_TIMEOUT} s ({attempts} attempts); last curl "
        f"({last.returncode if last else '-'}): {last.stderr if last else ''}\n"
        f"--- client ---\n{_log_tail(testnet, 'client')}\n--- onion host ---\n{_log_tail(testnet, 'onionhost')}")
    METRICS["ADD_ONION -> first successful fetch"] = f"{time.monotonic() - added_at:.1f} s ({attempts} curl attempt(s))"
    assert last.stdout == token

    control = tornet.ControlConnection.open(testnet.onion_control_port)
    try:
        control.authenticate_cookie(testnet.onion_cookie)
        detached = control.command("GETINFO onions/detached").values().get("onions/detached", "")
        assert service_id in detached.split(), f"the detached service is gone: {detached!r}"
        control.command(f"DEL_ONION {service_id}")
        detached = control.command("GETINFO onions/detached").values().get("onions/detached", "")
        assert service_id not in detached.split(), f"DEL_ONION left the service: {detached!r}"
    finally:
        control.close()


def test_every_tor_process_keeps_its_sockets_on_loopback(testnet):
    pids = tornet.tor_pids(testnet.dir)
    assert len(pids) == TOR_PROCESSES, f"expected {TOR_PROCESSES} tor processes of {testnet.dir}, found {pids}"
    rss_kib = sum(tornet.vmrss_kib(pid) for pid in pids)
    METRICS[f"memory (sum of VmRSS, {len(pids)} tor processes)"] = f"{rss_kib / 1024:.0f} MiB"
    assert tornet.non_loopback_sockets(pids) == []
