"""Helpers of the private-Tor-network tests: a minimal control-port client (control-spec: reply
lines, asynchronous 650 events, COOKIE authentication), a wrapper of `sotto testnet tor`, and
/proc readers for the tor processes (memory, sockets)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sotto_bin() -> Path:
    """The sotto binary to use when none is given: SOTTO_BIN, else the debug build of this
    repository. (The suite's `testnet` fixture passes the session's `sotto_bin` instead.)"""
    path = Path(os.environ.get("SOTTO_BIN") or ROOT / ".build" / "debug" / "sotto")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"no sotto binary at {path}: run 'swift build' or set SOTTO_BIN")
    return path

# Measurements of the session (name -> value), printed in the terminal summary by conftest.py.
METRICS: dict[str, str] = {}


class ControlError(Exception):
    """A control-port reply that was not 250, or a connection that ended; the text says which."""


@dataclass
class Reply:
    status: int
    lines: list[str]

    def values(self) -> dict[str, str]:
        """`250-Key=Value` lines as a dict (control-spec 3.x GETINFO / ADD_ONION replies)."""
        found = {}
        for line in self.lines:
            key, sep, value = line.partition("=")
            if sep:
                found[key] = value
        return found


@dataclass
class ControlConnection:
    """One control connection. Replies are read in order; 650 events that arrive in between are
    queued in `events` (control-spec 4.1: asynchronous replies may come at any time)."""

    sock: socket.socket
    events: list[str] = field(default_factory=list)
    _buffer: bytes = b""

    @classmethod
    def open(cls, port: int, timeout: float = 10.0) -> "ControlConnection":
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        return cls(sock)

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()

    def _line(self, deadline: float) -> str:
        while b"\r\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete line from the control port in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout as error:
                raise TimeoutError("no complete line from the control port in time") from error
            if not chunk:
                raise ControlError("the control port closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def _message(self, deadline: float) -> Reply:
        """One whole reply: `NNN-` mid lines, `NNN+` data blocks ending in `.`, a `NNN ` end line."""
        lines = []
        while True:
            line = self._line(deadline)
            if len(line) < 4 or not line[:3].isdigit() or line[3] not in " -+":
                raise ControlError(f"malformed control reply line {line!r}")
            status, kind, text = int(line[:3]), line[3], line[4:]
            if kind == "+":
                data = []
                while (more := self._line(deadline)) != ".":
                    data.append(more[1:] if more.startswith("..") else more)
                text = text + "\n" + "\n".join(data)
            lines.append(text)
            if kind == " ":
                return Reply(status, lines)

    def command(self, line: str, timeout: float = 10.0) -> Reply:
        self.sock.sendall(line.encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.status == 650:
                self.events.append(" ".join(reply.lines))
                continue
            if reply.status != 250:
                raise ControlError(f"{line.split()[0]} answered {reply.status}: {' / '.join(reply.lines)}")
            return reply

    def authenticate_cookie(self, cookie_path: str | Path) -> None:
        """PROTOCOLINFO, then AUTHENTICATE with the cookie file's 32 bytes in hex (control-spec 3.5)."""
        info = self.command("PROTOCOLINFO 1")
        auth = next((l for l in info.lines if l.startswith("AUTH ")), "")
        if "COOKIE" not in auth:
            raise ControlError(f"tor offers no cookie authentication: {auth!r}")
        cookie = Path(cookie_path).read_bytes()
        if len(cookie) != 32:
            raise ControlError(f"cookie file {cookie_path} has {len(cookie)} bytes, not 32")
        self.command("AUTHENTICATE " + cookie.hex())

    def wait_event(self, pattern: re.Pattern[str], timeout: float) -> str:
        """The first queued or arriving event that matches `pattern`; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if pattern.search(event):
                    return self.events.pop(i)
            reply = self._message(deadline)
            if reply.status != 650:
                raise ControlError(f"unexpected reply while waiting for an event: {reply}")
            self.events.append(" ".join(reply.lines))


# --- the network -------------------------------------------------------------------------------


@dataclass
class Testnet:
    dir: Path
    socks_port: int
    control_port: int
    cookie: Path
    onion_control_port: int
    onion_cookie: Path
    gateway_torrc: Path  # for a gateway's managed tor: [tor] torrc_include
    up_output: str
    bootstrap_seconds: float
    up_seconds: float


def run_testnet(action: str, folder: Path, timeout: float,
                binary: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`sotto testnet tor ACTION FOLDER`: progress on stderr, results on stdout."""
    return subprocess.run([str(binary or sotto_bin()), "testnet", "tor", action, str(folder)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def up(folder: Path, binary: Path | None = None) -> Testnet:
    """`sotto testnet tor up`, then its `env`; raises with the command's output when either fails."""
    started = time.monotonic()
    result = run_testnet("up", folder, timeout=150, binary=binary)
    up_seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"sotto testnet tor up failed ({result.returncode}):\n{output[-8000:]}")
    match = re.search(r"bootstrapped in ([0-9.]+) s", output)
    if not match:
        raise RuntimeError(f"sotto testnet tor up printed no bootstrap time:\n{output[-4000:]}")
    env = run_testnet("env", folder, timeout=30, binary=binary)
    if env.returncode != 0:
        raise RuntimeError(f"sotto testnet tor env failed ({env.returncode}):\n{env.stdout}{env.stderr}")
    values = dict(line.split("=", 1) for line in env.stdout.splitlines() if "=" in line)
    return Testnet(dir=folder, socks_port=int(values["TOR_SOCKS_PORT"]),
                   control_port=int(values["TOR_CONTROL_PORT"]), cookie=Path(values["TOR_COOKIE"]),
                   onion_control_port=int(values["ONION_CONTROL_PORT"]),
                   onion_cookie=Path(values["ONION_COOKIE"]), gateway_torrc=Path(values["TOR_GATEWAY_TORRC"]),
                   up_output=output,
                   bootstrap_seconds=float(match.group(1)), up_seconds=up_seconds)


def down(folder: Path, binary: Path | None = None) -> str:
    result = run_testnet("down", folder, timeout=60, binary=binary)
    if result.returncode != 0:
        raise RuntimeError(f"sotto testnet tor down failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def tor_pids(folder: Path) -> list[int]:
    """Every process whose command line is `tor -f <folder>/nodes/*/torrc ...` (what
    `sotto testnet tor up` starts), whether or not its pid file is still there."""
    prefix = f"{folder}/nodes/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (len(args) >= 3 and os.path.basename(args[0]) == b"tor" and args[1] == b"-f"
                and args[2].decode(errors="replace").startswith(prefix)):
            pids.append(int(entry.name))
    return sorted(pids)


def vmrss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_address: str) -> tuple[ipaddress._BaseAddress, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        address = ipaddress.IPv4Address(raw[::-1])
    else:  # /proc/net/tcp6: four little-endian 32-bit words
        address = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return address, int(port, 16)


def non_loopback_sockets(pids: list[int]) -> list[str]:
    """The IP sockets of `pids` whose local or remote address is neither loopback nor unset."""
    owner = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            owner[inode] = pid
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            inode = int(fields[9])
            if inode not in owner:
                continue
            for hex_address in (fields[1], fields[2]):
                address, port = _address(hex_address)
                mapped = getattr(address, "ipv4_mapped", None) or address
                if not (mapped.is_loopback or mapped.is_unspecified):
                    found.append(f"pid {owner[inode]} {table} {fields[1]} -> {fields[2]} ({address}:{port})")
    return found
