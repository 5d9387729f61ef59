"""Sotto's gateways over the private Tor network (one network per test run, `testnet` in
conftest.py): each gateway runs its own managed tor that joins the network through the
`gateway.torrc` that `sotto testnet tor up` writes. The exit publishes an onion service; the entry
reaches it through its tor's SocksPort. Real peers: libcoap's coap-client/coap-server (DTLS PSK),
PySocks (UDP ASSOCIATE), curl. Faults: tor killed with SIGKILL under a gateway."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import socks  # PySocks

import tornet
from sotto_e2e import (LOOPBACK, HTTPFileServer, UDPEcho, World, free_port, free_port_pair, run_sotto,
                       udp_port_bound, wait_until)

PSK = "sotto-tor-dtls-psk"
IDENTITY = "sotto-tor-client"
TIME = re.compile(rb"^[A-Z][a-z]{2} [ 0-9]\d \d{2}:\d{2}:\d{2}\s*$")
HELLO = b"hello from behind the onion service\n"
# An onion service is reachable 2-3 s after ADD_ONION here (DESIGN.md); tunnels retry with backoff.
REACH_TIMEOUT = 120

METRICS = tornet.METRICS


def _keygen(world: World, name: str, *flags: str) -> Path:
    out = run_sotto(world.binary, "keygen", "--out", "keys", "--name", name, *flags, cwd=world.dir)
    assert out.returncode == 0, out.stderr
    return world.dir / "keys"


def _tor_section(net) -> str:
    return f'[tor]\ntorrc_include = "{net.gateway_torrc}"\nrestart_delay_seconds = 0.5\n'


def exit_toml(net, name: str, exposes: list[str], *, client_auth: list[str] = (), onion_key: bool = True) -> str:
    lines = [f'state_dir = "state-{name}"', _tor_section(net),
             '[[profile]]\nname = "private"\nanonymizer = "tor"\n',
             '[[service]]', 'name = "home"', 'private_key_file = "keys/home.key"', 'psk_file = "keys/home.psk"',
             f"expose = {json.dumps(exposes)}"]
    if onion_key:
        lines.append('onion_key_file = "keys/home.onion_key"')
    if client_auth:
        lines.append(f"client_auth = {json.dumps(list(client_auth))}")
    return "\n".join(lines) + "\n"


def entry_toml(net, name: str, onion: str, *, socks_port: int, forwards: list[tuple[str, str]] = (),
               client_auth_key: str | None = None, tunnel: str = "") -> str:
    lines = [f'state_dir = "state-{name}"', _tor_section(net), tunnel,
             f'[socks]\nlisten = "{LOOPBACK}:{socks_port}"\n',
             '[[profile]]\nname = "private"\nanonymizer = "tor"\n',
             '[[peer]]', 'name = "home"', f'address = "{onion}"', 'public_key_file = "keys/home.pub"',
             'psk_file = "keys/home.psk"']
    if client_auth_key:
        lines.append(f'client_auth_key_file = "{client_auth_key}"')
    for listen, to in forwards:
        lines.append(f'\n[[forward]]\nlisten = "{listen}"\nto = "{to}"')
    return "\n".join(lines) + "\n"


def coap(port: int, method: str, path: str, *extra: str, wait: int = 15) -> subprocess.CompletedProcess:
    argv = ["coap-client-openssl", "-B", str(wait), "-k", PSK, "-u", IDENTITY, "-m", method, *extra,
            f"coaps://{LOOPBACK}:{port}{path}"]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=wait + 20)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}, stdout {result.stdout!r}, stderr {result.stderr[-500:]!r}"


def gateway_tor_pid(state_dir: Path) -> int | None:
    """The managed tor of a gateway: `tor -f STATE/tor/torrc`."""
    wanted = str(state_dir / "tor" / "torrc").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(args) >= 3 and os.path.basename(args[0]) == b"tor" and args[1] == b"-f" and args[2] == wanted:
            return int(entry.name)
    return None


def tcp_peers(pid: int) -> set[tuple[str, int]]:
    """Remote (address, port) of every established TCP socket of `pid` (IPv4 and IPv6 tables)."""
    inodes = tornet._socket_inodes(pid)
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[9]) in inodes and fields[3] == "01":  # ESTABLISHED
                address, port = tornet._address(fields[2])
                found.add((str(getattr(address, "ipv4_mapped", None) or address), port))
    return found


@dataclass
class TorPair:
    world: World
    exit: object
    entry: object
    onion: str
    socks_port: int
    coap_forward: int
    http_forward: int
    http: HTTPFileServer
    udp_echo: UDPEcho

    def entry_status(self) -> dict:
        return self.entry.status()

    def wait_coap(self, timeout: float = REACH_TIMEOUT) -> subprocess.CompletedProcess:
        last = {}

        def attempt():
            last["r"] = coap(self.coap_forward, "get", "/time", wait=8)
            return TIME.match(last["r"].stdout)

        try:
            wait_until(attempt, timeout, "a CoAP GET through the onion service to succeed", interval=0.5)
        except TimeoutError as error:
            raise AssertionError(f"{error}: {describe(last['r'])}\n--- entry log\n{self.entry.log_text()[-3000:]}"
                                 f"\n--- exit log\n{self.exit.log_text()[-3000:]}") from None
        return last["r"]


@pytest.fixture(scope="module")
def tor_pair(testnet, sotto_bin):
    """An exit (onion service; coap-server-openssl, an HTTP server and a UDP echo behind it) and an
    entry (SOCKS and two forwards), each with its own managed tor in the private network."""
    folder = Path(tempfile.mkdtemp(prefix="sotto-tor-", dir="/tmp"))
    world = World(binary=sotto_bin, dir=folder)
    try:
        keys = _keygen(world, "home", "--onion")
        onion = (keys / "home.onion").read_text().strip()
        base = free_port_pair()
        world.processes.start("coap-server", ["coap-server-openssl", "-A", LOOPBACK, "-p", str(base), "-k", PSK,
                                              "-h", "CoAP", "-d", "16", "-v", "4"])
        wait_until(lambda: udp_port_bound(base + 1), 10, "coap-server-openssl to bind")
        www = folder / "www"
        www.mkdir()
        (www / "hello.txt").write_bytes(HELLO)
        http = world.server(HTTPFileServer(www))
        echo = world.server(UDPEcho())
        exposes = [f"udp 5684 {LOOPBACK}:{base + 1}", f"tcp 80 {LOOPBACK}:{http.port}", f"udp 7 {LOOPBACK}:{echo.port}"]
        started = time.monotonic()
        exit_gw = world.gateway("exit", exit_toml(testnet, "exit", exposes), start=True)
        socks_port, coap_forward, http_forward = free_port(), free_port(), free_port()
        entry_gw = world.gateway("entry", entry_toml(
            testnet, "entry", onion, socks_port=socks_port,
            forwards=[(f"udp://{LOOPBACK}:{coap_forward}", "home:5684"), (f"tcp://{LOOPBACK}:{http_forward}", "home:80")]))
        pair = TorPair(world, exit_gw, entry_gw, onion, socks_port, coap_forward, http_forward, http, echo)
        pair.wait_coap()
        METRICS["gateway pair start -> first CoAP answer over the onion service"] = f"{time.monotonic() - started:.1f} s"
        yield pair
    finally:
        problems = world.teardown()
        for name, text in world.logs():
            if "panic" in text.lower() or "fatal error" in text.lower():
                problems.append(f"{name} crashed:\n{text[-2000:]}")
        assert not problems, problems


def test_coap_over_dtls_through_a_forward_and_an_onion_service(tor_pair):
    result = coap(tor_pair.coap_forward, "get", "/time")
    assert TIME.match(result.stdout), describe(result)

    put = coap(tor_pair.coap_forward, "put", "/over-tor", "-e", "carried through an onion service")
    assert b"ERR" not in put.stderr, describe(put)
    get = coap(tor_pair.coap_forward, "get", "/over-tor")
    assert get.stdout.strip() == b"carried through an onion service", describe(get)

    tunnels = tor_pair.entry.tunnels()
    assert [t["state"] for t in tunnels] == ["established"], tunnels


def test_status_and_log_show_tor_ready_and_the_onion_address(tor_pair):
    exit_tor = tor_pair.exit.status()["tor"]
    entry_tor = tor_pair.entry.status()["tor"]
    assert exit_tor["state"] == "ready" and exit_tor["bootstrapProgress"] == 100, exit_tor
    assert exit_tor["onionServices"] == {"home": tor_pair.onion}, exit_tor
    assert entry_tor["state"] == "ready" and entry_tor["mode"] == "managed", entry_tor
    assert f"published at {tor_pair.onion}:443" in tor_pair.exit.log_text()


def test_pysocks_udp_associate_reaches_a_udp_echo_behind_the_onion_service(tor_pair):
    sock = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.set_proxy(socks.SOCKS5, LOOPBACK, tor_pair.socks_port)
    sock.settimeout(2)
    try:
        for size in (32, 1200, 60_000):
            payload = os.urandom(size)
            got = None
            deadline = time.monotonic() + 30
            while got != payload and time.monotonic() < deadline:
                sock.sendto(payload, ("home", 7))
                try:
                    got, _ = sock.recvfrom(65535)
                except socket.timeout:
                    continue
            assert got == payload, f"no intact echo of {size} bytes through the onion service"
    finally:
        sock.close()


def test_curl_through_the_tor_profile_to_http_on_loopback_via_the_test_exit(tor_pair):
    """A destination that is no peer leaves through tor as an ordinary stream: out of the private
    network's exit relay (policy accept 127.0.0.0/8) to an HTTP server on 127.0.0.1."""
    result = subprocess.run(["curl", "-sS", "--max-time", "60", "--socks5-hostname", f"{LOOPBACK}:{tor_pair.socks_port}",
                             f"http://{LOOPBACK}:{tor_pair.http.port}/hello.txt"],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=70)
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    # And through the onion service's tcp 80 by the peer's name.
    by_peer = subprocess.run(["curl", "-sS", "--max-time", "60", "--socks5-hostname", f"{LOOPBACK}:{tor_pair.socks_port}",
                              "http://home:80/hello.txt"], stdin=subprocess.DEVNULL, capture_output=True, timeout=70)
    assert by_peer.returncode == 0 and by_peer.stdout == HELLO, by_peer.stderr


def test_the_entry_reaches_the_exit_only_through_tor(tor_pair):
    """Every TCP connection the entry gateway holds goes to its own tor's SocksPort: none to the
    exit's tunnel listener, none anywhere else."""
    socks_address = tor_pair.entry.status()["tor"]["socks"]
    tor_socks_port = int(socks_address.rsplit(":", 1)[1])
    exit_listener = [entry for entry in tor_pair.exit.status()["listeners"] if "tunnel listener" in entry][0]
    exit_port = int(exit_listener.rsplit(":", 1)[1])
    # The managed tor writes its control port here (ControlPortWriteToFile).
    control = (tor_pair.world.dir / "state-entry" / "tor" / "control-port").read_text()
    control_port = int(re.search(r"PORT=127\.0\.0\.1:(\d+)", control).group(1))
    coap(tor_pair.coap_forward, "get", "/time")
    peers = tcp_peers(tor_pair.entry.proc.pid)
    assert ("127.0.0.1", tor_socks_port) in peers, f"no tunnel through tor's SocksPort: {peers}"
    allowed = {("127.0.0.1", tor_socks_port), ("127.0.0.1", control_port)}
    assert peers <= allowed, f"{peers}: tor's SocksPort is {tor_socks_port}, its control port {control_port}"
    assert all(port != exit_port for _, port in peers)


def test_sigkill_of_the_entrys_tor_fails_closed_and_recovers_without_a_gateway_restart(tor_pair):
    tor_pair.wait_coap()
    entry_state = tor_pair.world.dir / "state-entry"
    pid = gateway_tor_pid(entry_state)
    assert pid, "no managed tor of the entry found"
    restarts = tor_pair.entry.status()["tor"]["restarts"]
    echo_before = tor_pair.udp_echo.received

    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text(),
               10, "the killed tor to die")
    # During the outage (the gateway notices within moments): SOCKS requests are refused, a
    # datagram to the peer waits in the bounded queue or is dropped; nothing reaches the exit.
    refused = subprocess.run(["curl", "-sS", "--max-time", "10", "--socks5-hostname", f"{LOOPBACK}:{tor_pair.socks_port}",
                              f"http://{LOOPBACK}:{tor_pair.http.port}/hello.txt"],
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    status = tor_pair.entry.status()["tor"]
    assert tor_pair.entry.proc.running(), "the gateway died with its tor"

    # tor comes back by itself (managed), the tunnel re-establishes, CoAP works again.
    result = tor_pair.wait_coap()
    METRICS["entry tor SIGKILL -> CoAP answered again"] = f"{time.monotonic() - killed:.1f} s"
    assert TIME.match(result.stdout)
    after = tor_pair.entry.status()["tor"]
    assert after["state"] == "ready" and after["restarts"] > restarts, after
    new_pid = gateway_tor_pid(entry_state)
    assert new_pid and new_pid != pid
    log = tor_pair.entry.log_text()
    assert "tor is not available" in log
    if status["state"] != "ready":
        # The refusal was seen while tor was down: it must be a SOCKS failure, never a success.
        assert refused.returncode != 0, refused.stdout
    assert tor_pair.udp_echo.received >= echo_before


def test_sigkill_of_the_exits_tor_republishes_the_same_address(tor_pair):
    exit_state = tor_pair.world.dir / "state-exit"
    pid = gateway_tor_pid(exit_state)
    assert pid
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    result = tor_pair.wait_coap()
    METRICS["exit tor SIGKILL -> CoAP answered again"] = f"{time.monotonic() - started:.1f} s"
    assert TIME.match(result.stdout)
    assert tor_pair.exit.proc.running()
    assert tor_pair.exit.status()["tor"]["onionServices"] == {"home": tor_pair.onion}


def test_a_new_onion_key_persists_and_gives_the_same_address_after_a_restart(testnet, sotto_bin):
    """Without onion_key_file the exit makes a key in its state_dir (0600) on first start and uses
    it again on the next: the address does not change."""
    folder = Path(tempfile.mkdtemp(prefix="sotto-tor-", dir="/tmp"))
    world = World(binary=sotto_bin, dir=folder)
    try:
        _keygen(world, "home")
        config = exit_toml(testnet, "exit", [f"udp 7 {LOOPBACK}:9"], onion_key=False)
        first = world.gateway("exit", config)
        wait_until(lambda: first.status()["tor"]["onionServices"].get("home"), 60, "the service to be published")
        address = first.status()["tor"]["onionServices"]["home"]
        key = folder / "state-exit" / "onion" / "home.key"
        assert key.exists() and (key.stat().st_mode & 0o777) == 0o600, oct(key.stat().st_mode)
        code, _ = first.stop()
        assert code == 0
        assert "removed (DEL_ONION" in first.log_text()

        second = world.gateway("exit", config)
        wait_until(lambda: second.status()["tor"]["onionServices"].get("home"), 60, "the service to be published again")
        assert second.status()["tor"]["onionServices"]["home"] == address
    finally:
        assert not world.teardown()


def test_client_authorization_keeps_out_an_entry_without_the_key(testnet, sotto_bin):
    folder = Path(tempfile.mkdtemp(prefix="sotto-tor-", dir="/tmp"))
    world = World(binary=sotto_bin, dir=folder)
    try:
        keys = _keygen(world, "home", "--onion", "--client-auth")
        onion = (keys / "home.onion").read_text().strip()
        www = folder / "www"
        www.mkdir()
        (www / "hello.txt").write_bytes(HELLO)
        http = world.server(HTTPFileServer(www))
        world.gateway("exit", exit_toml(testnet, "exit", [f"tcp 80 {LOOPBACK}:{http.port}"],
                                        client_auth=[(keys / "home.auth_pub").read_text().strip()]))

        def fetch(port: int) -> subprocess.CompletedProcess:
            return subprocess.run(["curl", "-sS", "--max-time", "30", f"http://{LOOPBACK}:{port}/hello.txt"],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=40)

        with_key_port, without_key_port = free_port(), free_port()
        with_key = world.gateway("with-key", entry_toml(testnet, "with-key", onion, socks_port=free_port(),
                                 forwards=[(f"tcp://{LOOPBACK}:{with_key_port}", "home:80")],
                                 client_auth_key="keys/home.auth_key"))
        wait_until(lambda: fetch(with_key_port).stdout == HELLO, REACH_TIMEOUT, "the authorized entry to fetch", interval=0.5)

        without = world.gateway("without-key", entry_toml(testnet, "without-key", onion, socks_port=free_port(),
                                forwards=[(f"tcp://{LOOPBACK}:{without_key_port}", "home:80")]))
        wait_until(lambda: without.status()["tor"]["state"] == "ready", 60, "the second entry's tor")
        result = fetch(without_key_port)
        assert result.stdout != HELLO
        wait_until(lambda: "0xF4" in without.log_text(), 60, "tor's 'client authorization missing' (0xF4) in the log")
        assert with_key.status()["tor"]["state"] == "ready"
    finally:
        assert not world.teardown()
