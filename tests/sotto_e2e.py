"""Helpers for the end-to-end tests: real gateways (`sotto run`), real peers (curl, PySocks,
libcoap's coap-client/coap-server, Python servers), raw SOCKS5 bytes, and bounded waits.

Rules every helper keeps:
- only 127.0.0.1 is ever used;
- every wait has a deadline;
- every process is started through a `Processes` registry, which stops it by its PID
  (SIGTERM, then SIGKILL) in the test's finalizer;
- every server thread is stopped in the finalizer too.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

LOOPBACK = "127.0.0.1"
CELL_SIZE = 514


# --- waiting ----------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - remembered for the timeout message
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}{detail}")
        time.sleep(interval)


# --- ports ------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    """Free for both TCP and UDP on 127.0.0.1 (a gateway or coap-server may bind either)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_port() -> int:
    """A port that is free for TCP and UDP right now (bind port 0 and release)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
        s.close()
        if _port_free(port):
            return port
    raise RuntimeError("no free port found")


def free_port_pair() -> int:
    """A port P with P and P+1 free (coap-server listens on P for CoAP and P+1 for DTLS)."""
    for _ in range(200):
        port = free_port()
        if port < 65535 and _port_free(port + 1):
            return port
    raise RuntimeError("no free pair of ports found")


def _proc_net_ports(kind: str) -> set[int]:
    ports: set[int] = set()
    for name in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def udp_port_bound(port: int) -> bool:
    """Whether some process has a UDP socket on `port` (read from /proc, binds nothing)."""
    return port in _proc_net_ports("udp")


# --- processes ---------------------------------------------------------------------------------


class Proc:
    """One child process, its output kept in a log file."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path, env: Optional[dict] = None):
        self.name = name
        self.argv = argv
        self.log = log
        self._log_file = open(log, "wb")
        self.popen = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=env)
        self.pid = self.popen.pid
        self.expected_exit = False

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> tuple[Optional[int], bool]:
        """SIGTERM by PID, then SIGKILL after `timeout`. Returns (exit code, was killed)."""
        killed = False
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                killed = True
                os.kill(self.pid, signal.SIGKILL)
                self.wait(5)
        self._log_file.close()
        return self.popen.returncode, killed


class Processes:
    """Every process a test starts. `stop_all` runs in the test's finalizer."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], cwd: Optional[Path] = None, env: Optional[dict] = None) -> Proc:
        proc = Proc(name, argv, cwd or self.workdir, self.workdir / f"{name}.log", env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> list[str]:
        """Stops every process still running (newest first); returns problems found."""
        problems = []
        for proc in reversed(self.procs):
            was_running = proc.running()
            if not was_running and not proc.expected_exit and isinstance(proc, GatewayProc):
                problems.append(f"{proc.name} (pid {proc.pid}) had exited by itself with code {proc.popen.returncode}")
            code, killed = proc.stop()
            if was_running and isinstance(proc, GatewayProc):
                if killed:
                    problems.append(f"{proc.name} (pid {proc.pid}) ignored SIGTERM for 5 s and was killed")
                elif code != 0:
                    problems.append(f"{proc.name} (pid {proc.pid}) exited with code {code} on SIGTERM")
        return problems


class GatewayProc(Proc):
    pass


# --- the sotto binary --------------------------------------------------------------------------


def run_sotto(binary: Path, *args: str, cwd: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Keys:
    private_file: str   # relative to the gateway's folder
    public_file: str
    psk_file: str
    public_b64: str
    psk_b64: str


def keygen(binary: Path, workdir: Path, name: str) -> Keys:
    out = run_sotto(binary, "keygen", "--out", "keys", "--name", name, cwd=workdir)
    if out.returncode != 0:
        raise RuntimeError(f"sotto keygen failed ({out.returncode}): {out.stderr}")
    keys = workdir / "keys"
    return Keys(private_file=f"keys/{name}.key", public_file=f"keys/{name}.pub", psk_file=f"keys/{name}.psk",
                public_b64=(keys / f"{name}.pub").read_text().strip(),
                psk_b64=(keys / f"{name}.psk").read_text().strip())


class Gateway:
    """One `sotto run --config FILE` process and its status."""

    def __init__(self, world: "World", name: str, config_text: str):
        self.world = world
        self.name = name
        self.config = world.dir / f"{name}.toml"
        self.config.write_text(config_text)
        self.proc: Optional[GatewayProc] = None

    @property
    def status_socket(self) -> Path:
        return self.world.dir / f"state-{self.name}" / "status.sock"

    def start(self, timeout: float = 20.0) -> "Gateway":
        argv = [str(self.world.binary), "run", "--config", str(self.config)]
        proc = GatewayProc(self.name, argv, self.world.dir, self.world.dir / f"{self.name}-{len(self.world.processes.procs)}.log")
        self.world.processes.procs.append(proc)
        self.proc = proc

        def ready():
            if not proc.running():
                raise RuntimeError(
                    f"gateway {self.name} exited with code {proc.popen.returncode} before 'sotto ready':\n{proc.log_text()}")
            return "sotto ready" in proc.log_text()

        try:
            wait_until(ready, timeout, f"gateway {self.name} to log 'sotto ready'")
        except RuntimeError:
            proc.expected_exit = True
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[Optional[int], float]:
        """Signals the gateway by PID; returns its exit code (None if it did not exit) and how long it took."""
        assert self.proc is not None
        self.proc.expected_exit = True
        started = time.monotonic()
        self.proc.signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def status(self) -> dict:
        out = run_sotto(self.world.binary, "status", "--config", str(self.config), cwd=self.world.dir, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(f"sotto status --config {self.config.name} failed ({out.returncode}): {out.stderr}")
        return json.loads(out.stdout)

    def counters(self) -> dict:
        return self.status()["counters"]

    def tunnels(self) -> list[dict]:
        return self.status()["tunnels"]

    def wait_counter(self, name: str, at_least: int, timeout: float = 10.0) -> int:
        """Waits until counter `name` reaches `at_least`; returns its value."""
        seen = {}

        def check():
            seen["value"] = self.counters()[name]
            return (seen["value"],) if seen["value"] >= at_least else None

        try:
            return wait_until(check, timeout, f"{self.name} counter {name} >= {at_least}", interval=0.1)[0]
        except TimeoutError as error:
            raise AssertionError(f"{error}; it is {seen.get('value')}") from None

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc else ""


# --- configuration ------------------------------------------------------------------------------


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def exit_config(*, name: str, tunnel_port: int, keys: Keys, exposes: list[str], max_tunnels: Optional[int] = None,
                max_flows: Optional[int] = None, tunnel_extra: str = "", log_level: str = "info") -> str:
    lines = [
        f'state_dir = "state-{name}"',
        f'log_level = "{log_level}"',
        "",
        "[tunnel]",
        "handshake_timeout_seconds = 3",
        tunnel_extra,
        "",
        "[[profile]]",
        'name = "direct"',
        'anonymizer = "none"',
        "",
        "[[service]]",
        'name = "home"',
        f'listen = "{LOOPBACK}:{tunnel_port}"',
        f'private_key_file = "{keys.private_file}"',
        f'psk_file = "{keys.psk_file}"',
        f"expose = {toml_list(exposes)}",
    ]
    if max_tunnels is not None:
        lines.append(f"max_tunnels = {max_tunnels}")
    if max_flows is not None:
        lines.append(f"max_flows_per_tunnel = {max_flows}")
    return "\n".join(lines) + "\n"


@dataclass
class ProfileSpec:
    name: str
    default: bool = False
    password: Optional[str] = None
    allow_direct: bool = False


def entry_config(*, name: str, peer_port: int, keys: Keys, socks_port: Optional[int] = None, auth: str = "optional",
                 profiles: Optional[list[ProfileSpec]] = None, forwards: Optional[list[tuple[str, str]]] = None,
                 tunnel_extra: str = "", log_level: str = "info", peer_name: str = "home",
                 peer_extra: str = "") -> str:
    profiles = profiles or [ProfileSpec("direct", default=True)]
    lines = [
        f'state_dir = "state-{name}"',
        f'log_level = "{log_level}"',
        "",
        "[tunnel]",
        "max_reconnect_delay_seconds = 2",
        tunnel_extra,
        "",
    ]
    if socks_port is not None:
        lines += ["[socks]", f'listen = "{LOOPBACK}:{socks_port}"', f'auth = "{auth}"', ""]
    for p in profiles:
        lines += ["[[profile]]", f'name = "{p.name}"', 'anonymizer = "none"']
        if p.default:
            lines.append("default = true")
        if p.password is not None:
            lines.append(f"password = {json.dumps(p.password)}")
        if p.allow_direct:
            lines.append("allow_direct = true")
        lines.append("")
    lines += [
        "[[peer]]",
        f'name = "{peer_name}"',
        f'address = "{LOOPBACK}:{peer_port}"',
        f'public_key_file = "{keys.public_file}"',
        f'psk_file = "{keys.psk_file}"',
        peer_extra,
        "",
    ]
    for listen, to in forwards or []:
        lines += ["[[forward]]", f'listen = "{listen}"', f'to = "{to}"', ""]
    return "\n".join(lines) + "\n"


# --- in-process servers (behind the exit) -------------------------------------------------------


class _QuietHTTPHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass


class HTTPFileServer:
    """Python's http.server serving one folder on 127.0.0.1."""

    def __init__(self, root: Path):
        self.server = ThreadingHTTPServer((LOOPBACK, 0), partial(_QuietHTTPHandler, directory=str(root)))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class UDPEcho:
    """Echoes every datagram back to its sender; counts what it saw."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.sources: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            try:
                data, source = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.received += 1
            self.sources.add(source)
            try:
                self.sock.sendto(data, source)
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


class _EchoTCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(60)
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)
        except OSError:
            return


class TCPEcho:
    """Echoes TCP bytes; holds each connection open until the client closes it."""

    def __init__(self):
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((LOOPBACK, 0), _EchoTCPHandler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class RecordingProxy:
    """A TCP relay between the entry and the exit's tunnel listener. Records the first
    `CELL_SIZE` bytes of every entry->exit stream (the Noise first message) and can corrupt
    one byte of the next entry->exit cell after the handshake. `traffic` records what an
    observer of the link sees: (monotonic time, entry_to_exit, bytes) of every read."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.first_messages: list[bytes] = []
        self.corrupt_next_cell = threading.Event()
        self.corrupted = threading.Event()
        self.traffic: list[tuple[float, bool, int]] = []
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.1)
            if not ready:
                continue
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, entry_to_exit: bool):
        seen = 0
        first = b""
        src.settimeout(None)
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.traffic.append((time.monotonic(), entry_to_exit, len(data)))
                if entry_to_exit:
                    if len(first) < CELL_SIZE:
                        first += data[:CELL_SIZE - len(first)]
                        if len(first) == CELL_SIZE:
                            self.first_messages.append(first)
                    # Flip one bit of the first cell after the handshake message, once.
                    if self.corrupt_next_cell.is_set():
                        position = max(seen, CELL_SIZE) - seen
                        if position < len(data):
                            data = bytearray(data)
                            data[position] ^= 0x01
                            data = bytes(data)
                            self.corrupt_next_cell.clear()
                            self.corrupted.set()
                    seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bytes_between(self, start: float, end: float) -> tuple[int, int]:
        """Bytes entry->exit and exit->entry read in [start, end) (monotonic seconds)."""
        with self._lock:
            up = sum(n for t, e, n in self.traffic if start <= t < end and e)
            down = sum(n for t, e, n in self.traffic if start <= t < end and not e)
        return up, down

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass


# --- raw SOCKS5 ---------------------------------------------------------------------------------


def recv_exact(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    """Reads exactly n bytes, or raises: EOFError on a close, TimeoutError past the deadline."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {len(data)} of {n} bytes: {data!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            raise TimeoutError(f"got {len(data)} of {n} bytes: {data!r}") from None
        except ConnectionResetError:
            raise EOFError(f"connection reset after {len(data)} of {n} bytes: {data!r}") from None
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes: {data!r}")
        data += chunk
    return data


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Reads until the peer closes; returns (everything received, seconds until the close).
    Raises TimeoutError if the connection is still open after `timeout`."""
    started = time.monotonic()
    deadline = started + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"connection still open after {timeout:.1f} s; received {len(data)} bytes")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - started
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def socks_address(host: str, port: int) -> bytes:
    try:
        return b"\x01" + socket.inet_aton(host) + struct.pack(">H", port)
    except OSError:
        name = host.encode()
        return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)


def read_socks_reply(sock: socket.socket, timeout: float = 10.0) -> tuple[int, tuple[str, int]]:
    """Reads a SOCKS5 reply (RFC 1928 section 6); returns (REP, (BND.ADDR, BND.PORT))."""
    head = recv_exact(sock, 4, timeout)
    if head[0] != 5:
        raise AssertionError(f"reply version {head[0]} != 5: {head!r}")
    atyp = head[3]
    if atyp == 1:
        host = socket.inet_ntoa(recv_exact(sock, 4, timeout))
    elif atyp == 4:
        host = socket.inet_ntop(socket.AF_INET6, recv_exact(sock, 16, timeout))
    elif atyp == 3:
        host = recv_exact(sock, recv_exact(sock, 1, timeout)[0], timeout).decode()
    else:
        raise AssertionError(f"reply with address type {atyp}: {head!r}")
    port = struct.unpack(">H", recv_exact(sock, 2, timeout))[0]
    return head[1], (host, port)


class RawSocks:
    """A SOCKS5 client written byte by byte (RFC 1928, RFC 1929)."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def greet(self, methods: bytes = b"\x00") -> bytes:
        self.send(b"\x05" + bytes([len(methods)]) + methods)
        return recv_exact(self.sock, 2)

    def authenticate(self, user: str, password: str) -> bytes:
        u, p = user.encode(), password.encode()
        self.send(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        return recv_exact(self.sock, 2)

    def request(self, command: int, host: str, port: int, timeout: float = 10.0) -> tuple[int, tuple[str, int]]:
        self.send(b"\x05" + bytes([command, 0]) + socks_address(host, port))
        return read_socks_reply(self.sock, timeout)

    def connect(self, host: str, port: int, user: Optional[str] = None, password: Optional[str] = None) -> int:
        """Greets (no-auth, or username/password), sends CONNECT; returns REP."""
        if user is None:
            assert self.greet(b"\x00") == b"\x05\x00"
        else:
            assert self.greet(b"\x02") == b"\x05\x02"
            assert self.authenticate(user, password or "") == b"\x01\x00"
        rep, _ = self.request(1, host, port)
        return rep


def socks_udp_header(host: str, port: int, frag: int = 0) -> bytes:
    return b"\x00\x00" + bytes([frag]) + socks_address(host, port)


def parse_socks_udp(datagram: bytes) -> tuple[str, int, bytes]:
    assert datagram[:2] == b"\x00\x00", datagram[:8]
    assert datagram[2] == 0, f"FRAG {datagram[2]} in a reply"
    atyp = datagram[3]
    if atyp == 1:
        host, rest = socket.inet_ntoa(datagram[4:8]), datagram[8:]
    elif atyp == 3:
        n = datagram[4]
        host, rest = datagram[5:5 + n].decode(), datagram[5 + n:]
    elif atyp == 4:
        host, rest = socket.inet_ntop(socket.AF_INET6, datagram[4:20]), datagram[20:]
    else:
        raise AssertionError(f"address type {atyp}")
    return host, struct.unpack(">H", rest[:2])[0], rest[2:]


class RawUDPAssociation:
    """A UDP ASSOCIATE done by hand, for sending datagrams no library would send."""

    def __init__(self, socks_port: int):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.udp.bind((LOOPBACK, 0))
        self.control = RawSocks(socks_port)
        assert self.control.greet(b"\x00") == b"\x05\x00"
        rep, relay = self.control.request(3, LOOPBACK, self.udp.getsockname()[1])
        assert rep == 0, f"UDP ASSOCIATE refused with 0x{rep:02x}"
        self.relay = (LOOPBACK if relay[0] in ("0.0.0.0", "::") else relay[0], relay[1])

    def send_raw(self, datagram: bytes):
        self.udp.sendto(datagram, self.relay)

    def send(self, host: str, port: int, payload: bytes, frag: int = 0):
        self.send_raw(socks_udp_header(host, port, frag) + payload)

    def receive(self, timeout: float) -> Optional[tuple[str, int, bytes]]:
        ready, _, _ = select.select([self.udp], [], [], timeout)
        if not ready:
            return None
        datagram, source = self.udp.recvfrom(70000)
        assert source == self.relay, f"datagram from {source}, not the relay {self.relay}"
        return parse_socks_udp(datagram)

    def echo(self, host: str, port: int, payload: bytes, timeout: float = 10.0, resend: float = 1.0) -> bytes:
        """Sends until the echo of `payload` comes back (UDP may be lost while a tunnel comes up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send(host, port, payload)
            wait_end = min(deadline, time.monotonic() + resend)
            while time.monotonic() < wait_end:
                got = self.receive(max(0.0, wait_end - time.monotonic()))
                if got and got[2] == payload:
                    return got[2]
        raise TimeoutError(f"no echo of a {len(payload)}-byte datagram via {host}:{port} within {timeout} s")

    def close(self):
        self.control.close()
        self.udp.close()


# --- helpers for checks ---------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clean_env() -> dict:
    """The environment without proxy variables, so curl uses only what a test tells it."""
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


@dataclass
class World:
    """One test's folder, processes, servers and gateways; torn down by the `world` fixture."""

    binary: Path
    dir: Path
    processes: Processes = field(init=False)
    gateways: list[Gateway] = field(default_factory=list)
    servers: list[object] = field(default_factory=list)

    def __post_init__(self):
        self.processes = Processes(self.dir)
        self._keys: dict[str, Keys] = {}

    def keys(self, name: str = "home") -> Keys:
        if name not in self._keys:
            self._keys[name] = keygen(self.binary, self.dir, name)
        return self._keys[name]

    def gateway(self, name: str, config_text: str, start: bool = True) -> Gateway:
        gw = Gateway(self, name, config_text)
        self.gateways.append(gw)
        return gw.start() if start else gw

    def server(self, server):
        self.servers.append(server)
        return server

    def coap_server(self, key: str, hint: str = "CoAP") -> int:
        """libcoap's coap-server (OpenSSL) with DTLS PSK; returns its DTLS port."""
        base = free_port_pair()
        self.processes.start("coap-server", [
            "coap-server-openssl", "-A", LOOPBACK, "-p", str(base), "-k", key, "-h", hint, "-d", "16", "-v", "4"])
        wait_until(lambda: udp_port_bound(base + 1), 10, f"coap-server-openssl to bind udp {base + 1}")
        return base + 1

    def logs(self) -> list[tuple[str, str]]:
        return [(f"{p.name} (pid {p.pid}, {p.log.name})", p.log_text()) for p in self.processes.procs]

    def teardown(self) -> list[str]:
        problems = self.processes.stop_all()
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as error:  # noqa: BLE001
                problems.append(f"stopping {type(server).__name__}: {error!r}")
        return problems


def run_curl(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout - 5)), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, env=clean_env())



# --- the usual set-up: an exit with servers behind it, an entry with SOCKS in front -----------------


@dataclass
class Pair:
    world: World
    exit: Gateway
    entry: Gateway
    tunnel_port: int
    socks_port: int
    http: HTTPFileServer
    www: Path
    udp_echo: UDPEcho
    tcp_echo: TCPEcho
    forwards: dict[str, int]

    def curl(self, path: str, *extra: str, host: str = "home:80", timeout: float = 60) -> subprocess.CompletedProcess:
        return run_curl(["--socks5-hostname", f"{LOOPBACK}:{self.socks_port}", *extra, f"http://{host}{path}"],
                        timeout=timeout)

    def assert_http_works(self, timeout: float = 20.0):
        """A small GET through SOCKS returns the served file (retried while a tunnel comes back)."""
        expected = (self.www / "hello.txt").read_bytes()
        last = None

        def attempt():
            nonlocal last
            last = self.curl("/hello.txt", timeout=15)
            return last.returncode == 0 and last.stdout == expected

        try:
            wait_until(attempt, timeout, "curl through the entry's SOCKS server to succeed", interval=0.3)
        except TimeoutError as error:
            raise AssertionError(f"{error}: curl exit {last.returncode if last else '?'}, "
                                 f"stderr {last.stderr.decode(errors='replace') if last else ''}") from None

    def assert_udp_echo_works(self, timeout: float = 15.0):
        association = RawUDPAssociation(self.socks_port)
        try:
            payload = b"still serving " + os.urandom(8).hex().encode()
            assert association.echo("home", 7, payload, timeout=timeout) == payload
        finally:
            association.close()


HELLO = b"hello from behind the exit\n"


def start_pair(world: World, *, exit_options: Optional[dict] = None, entry_options: Optional[dict] = None,
               extra_exposes: Optional[list[str]] = None, forwards: Optional[list[tuple[str, int]]] = None,
               peer_via: Optional[int] = None, start_entry: bool = True) -> Pair:
    """Starts an exit (exposing tcp 80 -> http.server, udp 7 -> UDP echo, tcp 7 -> TCP echo)
    and an entry (SOCKS, profiles `direct` (default), `alice` (password), `bob`).
    `forwards`: (proto, virtual port) pairs that get a local forward each. `peer_via`: the
    entry reaches the exit through this port instead (a proxy)."""
    keys = world.keys("home")
    www = world.dir / "www"
    www.mkdir(exist_ok=True)
    (www / "hello.txt").write_bytes(HELLO)
    http = world.server(HTTPFileServer(www))
    udp_echo = world.server(UDPEcho())
    tcp_echo = world.server(TCPEcho())
    tunnel_port = free_port()
    exposes = [f"tcp 80 {LOOPBACK}:{http.port}", f"udp 7 {LOOPBACK}:{udp_echo.port}",
               f"tcp 7 {LOOPBACK}:{tcp_echo.port}", *(extra_exposes or [])]
    exit_gw = world.gateway("exit", exit_config(name="exit", tunnel_port=tunnel_port, keys=keys, exposes=exposes,
                                                 **(exit_options or {})))
    socks_port = free_port()
    forward_ports = {}
    forward_specs = []
    for proto, vport in forwards or []:
        port = free_port()
        forward_ports[f"{proto} {vport}"] = port
        forward_specs.append((f"{proto}://{LOOPBACK}:{port}", f"home:{vport}"))
    options = {"profiles": [ProfileSpec("direct", default=True), ProfileSpec("alice", password="wonderland"),
                            ProfileSpec("bob")]}
    options.update(entry_options or {})
    entry_gw = world.gateway("entry", entry_config(name="entry", peer_port=peer_via or tunnel_port, keys=keys,
                                                    socks_port=socks_port, forwards=forward_specs, **options),
                             start=start_entry)
    return Pair(world=world, exit=exit_gw, entry=entry_gw, tunnel_port=tunnel_port, socks_port=socks_port, http=http,
                www=www, udp_echo=udp_echo, tcp_echo=tcp_echo, forwards=forward_ports)


# --- sotto coap-server (tests/test_coap_server.py, tests/test_msg_gateway.py) ---------------------


def start_sotto_coap_server(world: World, *args: str, ports: Optional[list[int]] = None, timeout: float = 20.0) -> Proc:
    """`sotto coap-server ARGS` as one of `world`'s processes (stopped by its PID at the end);
    returns once it logged 'listening on coaps://' and every port of `ports` has a UDP socket."""
    proc = world.processes.start(f"sotto-coap-server-{len(world.processes.procs)}",
                                 [str(world.binary), "coap-server", *args])

    def ready():
        if not proc.running():
            return "exited"
        return "listening on coaps://" in proc.log_text() and all(udp_port_bound(p) for p in ports or [])

    if wait_until(ready, timeout, "sotto coap-server to listen") == "exited":
        raise RuntimeError(f"sotto coap-server exited with code {proc.popen.returncode}:\n{proc.log_text()}")
    return proc
