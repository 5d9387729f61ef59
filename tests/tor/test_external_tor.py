"""A gateway that uses a running tor (`[tor] control = ...`) instead of starting its own: each way
of authenticating to the control port (cookie, which Sotto does as SAFECOOKIE; hashed password;
none), over TCP and over a Unix socket. The tor joins the private network (`testnet`) through
the network's gateway.torrc. When that tor is killed, the gateway refuses tor traffic and carries it
again once tor is started anew, without a restart of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sotto_e2e import LOOPBACK, HTTPFileServer, World, free_port, wait_until

HELLO = b"reached through an external tor\n"
PASSWORD = "correct horse battery staple"


def hashed_password(password: str) -> str:
    out = subprocess.run(["tor", "--quiet", "--hash-password", password], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


class ExternalTor:
    """A tor the test starts and stops by PID, as a user's long-lived tor would run."""

    def __init__(self, folder: Path, net, control_lines: list[str]):
        self.folder = folder
        folder.mkdir(mode=0o700)
        self.torrc = folder / "torrc"
        self.torrc.write_text("\n".join([
            f"%include {net.gateway_torrc}",
            f"DataDirectory {folder / 'data'}",
            "SocksPort 127.0.0.1:auto IsolateSOCKSAuth ExtendedErrors",
            f"Log notice file {folder / 'notice.log'}",
            *control_lines,
        ]) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self):
        self.proc = subprocess.Popen(["tor", "-f", str(self.torrc), "--defaults-torrc", "/dev/null"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def gateway_toml(name: str, socks_port: int, tor_lines: list[str]) -> str:
    return "\n".join([f'state_dir = "state-{name}"', "[tor]", *tor_lines, "restart_delay_seconds = 0.5", "",
                      f'[socks]\nlisten = "{LOOPBACK}:{socks_port}"', "",
                      '[[profile]]\nname = "private"\nanonymizer = "tor"', ""])


def fetch(socks_port: int, http_port: int) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--socks5-hostname", f"{LOOPBACK}:{socks_port}",
                           f"http://{LOOPBACK}:{http_port}/hello.txt"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


@pytest.fixture
def world_with_http(sotto_bin):
    folder = Path(tempfile.mkdtemp(prefix="sotto-ext-", dir="/tmp"))
    world = World(binary=sotto_bin, dir=folder)
    www = folder / "www"
    www.mkdir()
    (www / "hello.txt").write_bytes(HELLO)
    http = world.server(HTTPFileServer(www))
    tors: list[ExternalTor] = []
    yield world, http, tors
    for tor in tors:
        tor.stop()
    assert not world.teardown()


CASES = {
    # name: (tor's control lines, the gateway's [tor] lines, the method Sotto reports)
    "cookie-tcp": (["ControlPort 127.0.0.1:{port}", "CookieAuthentication 1"],
                   ['control = "127.0.0.1:{port}"'], "SAFECOOKIE"),
    "password": (["ControlPort 127.0.0.1:{port}", "HashedControlPassword {hash}"],
                 ['control = "127.0.0.1:{port}"', 'control_password_file = "password"'], "HASHEDPASSWORD"),
    "none": (["ControlPort 127.0.0.1:{port}"], ['control = "127.0.0.1:{port}"'], "NULL"),
    "cookie-unix": (["ControlPort unix:{folder}/control.sock", "CookieAuthentication 1"],
                    ['control = "unix:{folder}/control.sock"'], "SAFECOOKIE"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_external_tor_with_each_control_port_authentication(case, testnet, world_with_http):
    world, http, tors = world_with_http
    tor_lines, gateway_lines, method = CASES[case]
    port = free_port()
    folder = world.dir / "tor"
    values = {"port": port, "folder": folder, "hash": hashed_password(PASSWORD) if case == "password" else ""}
    if case == "password":
        secret = world.dir / "password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
    tor = ExternalTor(folder, testnet, [line.format(**values) for line in tor_lines]).start()
    tors.append(tor)
    socks_port = free_port()
    gateway = world.gateway("entry", gateway_toml("entry", socks_port, [line.format(**values) for line in gateway_lines]))

    wait_until(lambda: gateway.status()["tor"]["state"] == "ready", 60, f"the gateway to see tor ready ({case})",
               interval=0.3)
    status = gateway.status()["tor"]
    assert status["mode"].startswith("external"), status
    assert f"auth {method}" in gateway.log_text(), gateway.log_text()[-2000:]
    result = fetch(socks_port, http.port)
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    assert PASSWORD not in gateway.log_text()


def test_an_external_tor_killed_and_started_again_is_used_again_without_a_gateway_restart(testnet, world_with_http):
    world, http, tors = world_with_http
    port = free_port()
    tor = ExternalTor(world.dir / "tor", testnet, [f"ControlPort 127.0.0.1:{port}", "CookieAuthentication 1"]).start()
    tors.append(tor)
    socks_port = free_port()
    gateway = world.gateway("entry", gateway_toml("entry", socks_port, [f'control = "127.0.0.1:{port}"']))
    wait_until(lambda: gateway.status()["tor"]["state"] == "ready", 60, "tor ready", interval=0.3)
    assert fetch(socks_port, http.port).stdout == HELLO

    tor.kill()
    wait_until(lambda: gateway.status()["tor"]["state"] in ("down", "starting"), 20, "the gateway to notice", interval=0.2)
    refused = fetch(socks_port, http.port)
    assert refused.returncode != 0 and refused.stdout == b"", "a request went through while tor was gone"
    assert gateway.proc.running()

    tor.start()
    wait_until(lambda: gateway.status()["tor"]["state"] == "ready", 60, "the gateway to use the new tor", interval=0.3)
    wait_until(lambda: fetch(socks_port, http.port).stdout == HELLO, 60, "a fetch through the new tor", interval=0.5)
    assert gateway.status()["tor"]["restarts"] >= 1
