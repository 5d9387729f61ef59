"""`sotto msg` end to end (docs/channels.md), with real processes only:

- through the gateway pair (anonymizer none): `sotto msg send` -> the entry's local UDP forward ->
  tunnel -> exit -> `sotto coap-server` -> `sotto msg recv` (through the forward too); the
  gateways carry DTLS ciphertext of sealed envelopes;
- with `[hopping]` and epochs of a few seconds, directly: a client that keeps sending across
  several port changes loses no message.

Every process is stopped by its PID (the `world` fixture); every loop is bounded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
import subprocess
import time
from pathlib import Path

from sotto_e2e import LOOPBACK, free_port, start_pair, start_sotto_coap_server, udp_port_bound, wait_until

CHANNEL = "friends"
OPERATOR = "operator"
OPERATOR_PSK = "sotto-operator-psk-for-raw-requests"


def write_secret(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path.name


def channel_secret(world) -> str:
    """A 32-byte channel secret in base64, as docs/channels.md describes the file."""
    return write_secret(world.dir / f"{CHANNEL}.channel", base64.b64encode(os.urandom(32)) + b"\n")


def server_config(world, name: str, port: int, extra: str = "") -> Path:
    """The mailbox: one static PSK (for `sotto coap` as an operator) and the channel, whose derived
    identities it recognises without a table."""
    if not (world.dir / f"{OPERATOR}.psk").exists():
        write_secret(world.dir / f"{OPERATOR}.psk", OPERATOR_PSK.encode())
    path = world.dir / f"{name}.toml"
    path.write_text(f"""state_dir = "state-{name}"

[coap_server]
listen = ["{LOOPBACK}:{port}"]
database = "mailbox.sqlite"

[[coap_server.psk]]
identity = "{OPERATOR}"
key_file = "{OPERATOR}.psk"

[[channel]]
name = "{CHANNEL}"
secret_file = "{CHANNEL}.channel"
{extra}""")
    return path


def member_config(world, name: str, server_port: int, extra: str = "") -> Path:
    path = world.dir / f"{name}.toml"
    path.write_text(f"""state_dir = "state-{name}"

[[channel]]
name = "{CHANNEL}"
secret_file = "{CHANNEL}.channel"
server = "coaps://{LOOPBACK}:{server_port}"
sender = "{name}"
{extra}""")
    return path


def sotto(world, *args: str, timeout: float = 40) -> subprocess.CompletedProcess:
    return subprocess.run([str(world.binary), *args], cwd=world.dir, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}, stdout {result.stdout!r}, stderr {result.stderr!r}"


def send(world, config: Path, text: str, box: str = "inbox", timeout: float = 15) -> subprocess.CompletedProcess:
    return sotto(world, "msg", "send", "--config", str(config), "--channel", CHANNEL, "--to", box, "--text", text,
                 "--timeout", str(timeout))


def recv(world, config: Path, box: str = "inbox", *extra: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return sotto(world, "msg", "recv", "--config", str(config), "--channel", CHANNEL, "--box", box,
                 "--timeout", str(timeout), *extra)


def operator(world, method: str, port: int, path: str, *extra: str) -> subprocess.CompletedProcess:
    """`sotto coap` with the server's static identity: what any PSK holder can do to a box."""
    return sotto(world, "coap", method, f"coaps://{LOOPBACK}:{port}{path}", "--psk-identity", OPERATOR,
                 "--psk-key-file", str(world.dir / f"{OPERATOR}.psk"), "--timeout", "15", *extra)


def frames(body: bytes) -> list[tuple[int, bytes]]:
    """The envelope list of a GET (docs/coap-server.md): 8-byte id, 4-byte length, bytes; repeated."""
    out, at = [], 0
    while at < len(body):
        ident, length = struct.unpack_from(">QI", body, at)
        out.append((ident, body[at + 12:at + 12 + length]))
        at += 12 + length
    return out


def mailbox_through_the_pair(world):
    """`sotto coap-server` behind the exit (udp 5684), a local UDP forward on the entry.
    Returns (server config, server's DTLS port, the entry's forward port, pair)."""
    channel_secret(world)
    dtls_port = free_port()
    config = server_config(world, "mailbox", dtls_port)
    start_sotto_coap_server(world, "--config", str(config), ports=[dtls_port])
    pair = start_pair(world, extra_exposes=[f"udp 5684 {LOOPBACK}:{dtls_port}"], forwards=[("udp", 5684)])
    return config, dtls_port, pair.forwards["udp 5684"], pair


def test_msg_send_and_recv_through_the_gateway_pair_survive_a_server_restart(world):
    config, dtls_port, forward, pair = mailbox_through_the_pair(world)
    alice = member_config(world, "alice", forward)
    bob = member_config(world, "bob", forward)

    sent = send(world, alice, "hello bob, through two gateways")
    assert sent.returncode == 0, describe(sent)
    assert b"sent:" in sent.stderr, describe(sent)

    # Restart the mailbox: SIGTERM by PID, a clean exit, a new process on the same file and port.
    server = [p for p in world.processes.procs if p.name.startswith("sotto-coap-server")][-1]
    code, killed = server.stop()
    assert (code, killed) == (0, False), f"coap-server exit {code}, killed {killed}:\n{server.log_text()}"
    start_sotto_coap_server(world, "--config", str(config), ports=[dtls_port])

    got = recv(world, bob, "inbox", "--delete")

    assert got.returncode == 0, describe(got)
    assert got.stdout == b"alice: hello bob, through two gateways\n", describe(got)
    assert b"1 message(s) opened, 0 rejected, 1 deleted" in got.stderr, describe(got)
    tunnel = pair.entry.tunnels()
    assert tunnel and tunnel[0]["datagramsSent"] > 0 and tunnel[0]["datagramsReceived"] > 0, tunnel
    empty = recv(world, bob)
    assert empty.returncode == 0 and empty.stdout == b"", describe(empty)
    assert b"0 message(s) opened" in empty.stderr, describe(empty)


def test_msg_recv_through_the_pair_rejects_tampered_and_garbage_envelopes_and_reads_the_good_one(world):
    _, dtls_port, forward, _ = mailbox_through_the_pair(world)
    alice = member_config(world, "alice", forward)
    bob = member_config(world, "bob", forward)
    sent = send(world, alice, "the genuine one")
    assert sent.returncode == 0, describe(sent)

    # What any PSK holder can do: read the sealed envelope, flip one ciphertext bit, post it back;
    # and post bytes that are no envelope at all.
    listing = operator(world, "get", forward, "/mb/inbox")
    assert listing.returncode == 0, describe(listing)
    [(_, genuine)] = frames(listing.stdout)
    assert b"alice" not in genuine and b"genuine" not in genuine, "the envelope shows its sender or text"
    tampered = bytearray(genuine)
    tampered[40] ^= 0x01  # past version (1), epoch (8), nonce (12), channel tag (8): the ciphertext
    (world.dir / "tampered.bin").write_bytes(bytes(tampered))
    assert operator(world, "post", forward, "/mb/inbox", "--payload-file", "tampered.bin").returncode == 0
    garbage = operator(world, "post", forward, "/mb/inbox", "--payload", "this is not a sealed envelope at all")
    assert garbage.returncode == 0, describe(garbage)

    got = recv(world, bob)

    assert got.returncode == 1, describe(got)
    assert got.stdout == b"alice: the genuine one\n", describe(got)
    errors = got.stderr.decode()
    rejected = re.findall(r"envelope \d+ in box inbox rejected: (.*)", errors)
    assert len(rejected) == 2, errors
    assert rejected[0].startswith("tampered"), errors
    assert rejected[1].startswith("truncated: 36 bytes, an envelope has at least 63"), errors
    assert "1 message(s) opened, 2 rejected" in errors, errors


# --- port hopping -------------------------------------------------------------------------------


def hop_port(secret: bytes, first: int, last: int, epoch: int) -> int:
    """docs/channels.md: first + (first 8 bytes of HMAC-SHA256(secret, "sotto hop" || epoch) mod size),
    written here from the document, so the server's schedule is checked against it."""
    mac = hmac.new(secret, b"sotto hop" + struct.pack(">Q", epoch), hashlib.sha256).digest()
    return first + struct.unpack(">Q", mac[:8])[0] % (last - first + 1)


def test_msg_send_in_a_loop_across_hopping_boundaries_loses_no_message(world):
    epoch_seconds, duration = 2, 8.0
    channel_secret(world)
    # A range whose ports the test can see are free for the whole run (schedule computed here).
    for _ in range(50):
        secret = os.urandom(32)
        first = 20000 + int.from_bytes(os.urandom(2), "big") % 40000
        last = first + 63
        now_epoch = int(time.time()) // epoch_seconds
        needed = {hop_port(secret, first, last, e) for e in range(now_epoch - 1, now_epoch + int(duration / epoch_seconds) + 6)}
        if all(not udp_port_bound(p) for p in needed) and len(needed) > 3:
            break
    else:
        raise AssertionError("no range of 64 free ports found")
    write_secret(world.dir / "hop.secret", base64.b64encode(secret) + b"\n")
    hopping = f"""
[hopping]
secret_file = "hop.secret"
range = "{first}-{last}"
epoch_seconds = {epoch_seconds}
"""
    config = server_config(world, "mailbox", first, hopping)
    server = start_sotto_coap_server(world, "--config", str(config))
    # The server listens on the ports of the previous, current and next epoch, as the document says.
    epoch = int(time.time()) // epoch_seconds
    wait_until(lambda: all(udp_port_bound(hop_port(secret, first, last, e)) for e in (epoch, epoch + 1)), 5,
               "the current and next epoch's ports to be open")
    # The URI's port is ignored under [hopping]: give one that nothing listens on.
    alice = member_config(world, "alice", 9, hopping)
    bob = member_config(world, "bob", 9, hopping)

    sent, failures, ports_used = 0, [], set()
    started = time.monotonic()
    for i in range(200):
        if time.monotonic() - started >= duration:
            break
        ports_used.add(hop_port(secret, first, last, int(time.time()) // epoch_seconds))
        result = send(world, alice, f"message {i}", box="hop", timeout=5)
        sent += 1
        if result.returncode != 0:
            failures.append((i, describe(result)))
    elapsed = time.monotonic() - started
    got = recv(world, bob, "hop", "--delete")
    print(f"\nhopping: {sent} sends in {elapsed:.1f} s over {len(ports_used)} ports "
          f"({sorted(ports_used)}), {len(failures)} failed")

    assert not failures, f"{len(failures)} of {sent} sends failed: {failures[:3]}\n{server.log_text()[-3000:]}"
    assert len(ports_used) >= 3, f"the loop crossed too few boundaries: {ports_used}"
    assert got.returncode == 0, describe(got)
    lines = got.stdout.decode().splitlines()
    assert sorted(lines) == sorted(f"alice: message {i}" for i in range(sent)), describe(got)
    assert f"{sent} message(s) opened, 0 rejected".encode() in got.stderr, describe(got)
    assert "stopped listening on coaps://" in server.log_text(), "the server never closed an old epoch's port"
