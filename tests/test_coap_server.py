"""aiocoap (Python, DTLS through tinydtls/DTLSSocket) against `sotto coap-server`: an independent
CoAP stack as client, so the server's mailboxes (docs/coap-server.md), block-wise transfer
(RFC 7959), Observe (RFC 7641) and link format (RFC 6690) are checked against someone else's
reading of the RFCs. aiocoap's tinydtls offers only TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655), so
these tests also show that the server's OpenSSL accepts that suite.

Each test starts its own server (new database, new port) and stops it by PID; every await is
bounded by `asyncio.wait_for`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import struct
import time
from pathlib import Path

import pytest
from aiocoap import CONTENT, CREATED, DELETE, DELETED, GET, POST, PUT, Context, Message
from aiocoap.numbers.constants import TransportTuning
from aiocoap import error as coap_error
from aiocoap.numbers.codes import BAD_REQUEST, METHOD_NOT_ALLOWED, NOT_FOUND, REQUEST_ENTITY_TOO_LARGE

from sotto_e2e import LOOPBACK, free_port, start_sotto_coap_server, wait_until

# tinydtls as DTLSSocket 0.2.3 builds it takes PSKs of at most 16 bytes (DTLS_PSK_MAX_KEY_LEN =
# DTLS_KEY_LENGTH, crypto.h) and identities of at most 32 (DTLS_PSK_MAX_CLIENT_IDENTITY_LEN); a longer
# key overruns its buffer and the handshake ends in an internal_error alert. So: 16 bytes here.
PSK = "aiocoap-psk-16by"
IDENTITY = "aiocoap-client"
# The CoAP Content-Format registry (RFC 7252 section 12.3): link format and octet-stream.
LINK_FORMAT = 40
OCTET_STREAM = 42


def write_secret(path: Path, data: bytes) -> Path:
    """A key file created 0600 from the start (never briefly readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def serve(world, *extra: str) -> int:
    """A `sotto coap-server` with one PSK identity on a free port; returns the DTLS port."""
    key = write_secret(world.dir / "client.psk", PSK.encode())
    port = free_port()
    start_sotto_coap_server(world, "--listen", f"{LOOPBACK}:{port}", "--psk-identity", IDENTITY,
                            "--psk-key-file", str(key), "--database", str(world.dir / "mailbox.sqlite"), *extra,
                            ports=[port])
    return port


async def client(port: int, psk: str = PSK, identity: str = IDENTITY) -> Context:
    context = await Context.create_client_context()
    context.client_credentials.load_from_dict({
        f"coaps://{LOOPBACK}:{port}/*": {"dtls": {"psk": {"ascii": psk}, "client-identity": {"ascii": identity}}},
    })
    return context


def run(coroutine, timeout: float = 60.0):
    """Runs one test's async body with a deadline, so no aiocoap wait can hang the run."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def request(context: Context, code, port: int, path: str, payload: bytes = b"", timeout: float = 20.0,
                  **options) -> Message:
    message = Message(code=code, uri=f"coaps://{LOOPBACK}:{port}{path}", payload=payload, **options)
    return await asyncio.wait_for(context.request(message).response, timeout)


def frames(body: bytes) -> list[tuple[int, bytes]]:
    """The envelope list of a GET (docs/coap-server.md): 8-byte id, 4-byte length, bytes; repeated."""
    out = []
    at = 0
    while at < len(body):
        assert len(body) - at >= 12, f"a truncated frame header at byte {at} of {len(body)}"
        ident, length = struct.unpack_from(">QI", body, at)
        at += 12
        assert len(body) - at >= length, f"frame {ident} says {length} bytes, {len(body) - at} left"
        out.append((ident, body[at:at + length]))
        at += length
    return out


def content_format(message: Message) -> int | None:
    value = message.opt.content_format
    return None if value is None else int(value)


def test_aiocoap_posts_gets_and_deletes_envelopes(world):
    port = serve(world)

    async def body():
        context = await client(port)
        try:
            first = await request(context, POST, port, "/mb/inbox", b"first envelope")
            second = await request(context, POST, port, "/mb/inbox", b"second envelope")
            listing = await request(context, GET, port, "/mb/inbox")
            ids = [ident for ident, _ in frames(listing.payload)]
            deleted = await request(context, DELETE, port, f"/mb/inbox?id={ids[0]}")
            after = await request(context, GET, port, "/mb/inbox")
            again = await request(context, DELETE, port, f"/mb/inbox?id={ids[0]}")
            return first, second, listing, deleted, after, again
        finally:
            await context.shutdown()

    first, second, listing, deleted, after, again = run(body())

    assert first.code == CREATED and second.code == CREATED, (first, second)
    location = first.opt.location_path
    assert len(location) == 3 and location[:2] == ("mb", "inbox") and location[2].isdigit(), location
    assert listing.code == CONTENT and content_format(listing) == OCTET_STREAM, listing
    stored = frames(listing.payload)
    assert [envelope for _, envelope in stored] == [b"first envelope", b"second envelope"]
    assert stored[0][0] == int(location[2]) and stored[1][0] > stored[0][0], stored
    assert deleted.code == DELETED, deleted
    assert frames(after.payload) == stored[1:]
    assert again.code == DELETED, "acknowledging twice is fine (docs/coap-server.md)"


def test_aiocoap_blockwise_envelope_of_5000_bytes_goes_both_ways(world):
    """aiocoap sends the POST in Block1 pieces of at most 1024 bytes; the GET comes back in Block2
    pieces, which aiocoap reassembles (and which the raw first block shows)."""
    port = serve(world)
    envelope = os.urandom(5000)

    async def body():
        context = await client(port)
        try:
            stored = await request(context, POST, port, "/mb/big", envelope)
            whole = await request(context, GET, port, "/mb/big")
            raw = Message(code=GET, uri=f"coaps://{LOOPBACK}:{port}/mb/big")
            first_block = await asyncio.wait_for(context.request(raw, handle_blockwise=False).response, 20)
            return stored, whole, first_block
        finally:
            await context.shutdown()

    stored, whole, first_block = run(body())

    assert stored.code == CREATED, stored
    assert whole.code == CONTENT, whole
    assert [e for _, e in frames(whole.payload)] == [envelope]
    block2 = first_block.opt.block2
    assert block2 is not None and block2.block_number == 0 and block2.more, first_block
    assert len(first_block.payload) < len(whole.payload)
    assert first_block.opt.size2 in (None, len(whole.payload)), first_block.opt.size2


def test_aiocoap_observes_a_box_and_gets_two_notifications(world):
    port = serve(world)

    async def body():
        context = await client(port)
        poster = await client(port)
        try:
            # The very first request naming a box is answered without Observe (docs/coap-server.md).
            await request(context, GET, port, "/mb/watched")
            observation = context.request(Message(code=GET, uri=f"coaps://{LOOPBACK}:{port}/mb/watched", observe=0))
            registered = await asyncio.wait_for(observation.response, 20)
            notifications = []
            updates = observation.observation.__aiter__()
            for text in (b"note one", b"note two"):
                posted = await request(poster, POST, port, "/mb/watched", text)
                assert posted.code == CREATED, posted
                # Wait for the notification that lists this envelope (an older state may come first).
                deadline = time.monotonic() + 15
                while True:
                    left = deadline - time.monotonic()
                    assert left > 0, f"no notification listing {text!r} within 15 s; got {notifications}"
                    notification = await asyncio.wait_for(updates.__anext__(), left)
                    notifications.append(notification)
                    if text in [e for _, e in frames(notification.payload)]:
                        break
            observation.observation.cancel()
            return registered, notifications
        finally:
            await poster.shutdown()
            await context.shutdown()

    registered, notifications = run(body())

    assert registered.code == CONTENT and registered.opt.observe is not None, registered
    assert frames(registered.payload) == []
    assert len(notifications) >= 2
    assert all(n.code == CONTENT and n.opt.observe is not None for n in notifications), notifications
    assert [e for _, e in frames(notifications[-1].payload)] == [b"note one", b"note two"]


def test_aiocoap_reads_well_known_core(world):
    port = serve(world)

    async def body():
        context = await client(port)
        try:
            core = await request(context, GET, port, "/.well-known/core")
            filtered = await request(context, GET, port, "/.well-known/core?rt=sotto.mailbox")
            return core, filtered
        finally:
            await context.shutdown()

    core, filtered = run(body())

    assert core.code == CONTENT and content_format(core) == LINK_FORMAT, core
    text = core.payload.decode()
    assert '</mb>' in text and 'rt="sotto.mailbox"' in text and "ct=42" in text, text
    assert filtered.code == CONTENT and "</mb>" in filtered.payload.decode(), filtered


def test_aiocoap_gets_the_right_error_codes(world):
    port = serve(world, "--max-envelope-bytes", "3000")

    async def body():
        context = await client(port)
        try:
            return {
                "bad box": await request(context, GET, port, "/mb/.hidden"),
                "put": await request(context, PUT, port, "/mb/inbox", b"x"),
                "no such path": await request(context, GET, port, "/elsewhere"),
                "empty": await request(context, POST, port, "/mb/inbox"),
                "too large": await request(context, POST, port, "/mb/inbox", os.urandom(4000)),
                "still serving": await request(context, POST, port, "/mb/inbox", b"ok"),
            }
        finally:
            await context.shutdown()

    answers = run(body())

    assert answers["bad box"].code == BAD_REQUEST and answers["bad box"].payload, answers["bad box"]
    assert answers["put"].code == METHOD_NOT_ALLOWED, answers["put"]
    assert answers["no such path"].code == NOT_FOUND, answers["no such path"]
    assert answers["empty"].code == BAD_REQUEST and answers["empty"].payload, answers["empty"]
    assert answers["too large"].code == REQUEST_ENTITY_TOO_LARGE, answers["too large"]
    assert answers["still serving"].code == CREATED, answers["still serving"]


class QuickGiveUp(TransportTuning):
    """CON retransmissions after 1, 2 and 4 s, then failure (RFC 7252 section 4.8 names these
    parameters): with the defaults (2 s, 4 retransmissions) a wrong key takes about 72 s to
    report, against `sotto coap-server` and libcoap's coap-server-openssl alike (measured)."""

    ACK_TIMEOUT = 1.0
    MAX_RETRANSMIT = 2


@pytest.mark.parametrize("psk, identity", [(PSK[::-1], IDENTITY), (PSK, "nobody-knows-me")],
                         ids=["wrong key", "unknown identity"])
def test_aiocoap_with_a_wrong_psk_fails_within_a_bounded_time(world, psk, identity):
    """An unknown identity is refused in the handshake (a fatal alert: at once). A wrong key
    cannot be told from damage: the server cannot decrypt the client's Finished and drops it
    silently (RFC 6347 section 4.1.2.7), so the client fails when its retransmissions run out."""
    port = serve(world)

    async def body():
        context = await client(port, psk=psk, identity=identity)
        started = time.monotonic()
        try:
            try:
                outcome = await request(context, GET, port, "/.well-known/core", timeout=60,
                                        transport_tuning=QuickGiveUp())
            except (coap_error.Error, OSError, asyncio.TimeoutError) as failure:
                outcome = failure
            return outcome, time.monotonic() - started
        finally:
            await context.shutdown()

    outcome, elapsed = run(body(), timeout=90)
    print(f"\nwrong {'key' if psk != PSK else 'identity'}: {outcome!r} after {elapsed:.2f} s")

    assert not isinstance(outcome, Message), f"a refused handshake answered {outcome}"
    assert not isinstance(outcome, asyncio.TimeoutError), "no failure within 60 s"
    assert isinstance(outcome, coap_error.Error), repr(outcome)
    # 1.5 * (1 + 2 + 4) s is the most the tuning above allows.
    assert elapsed < 12, f"the failure took {elapsed:.1f} s"
    if identity != IDENTITY:
        # The fatal alert unknown_psk_identity (115, RFC 4279 section 2), which aiocoap passes on.
        assert "115" in repr(outcome) and elapsed < 3, (outcome, elapsed)

    async def good():
        context = await client(port)
        try:
            return await request(context, GET, port, "/.well-known/core")
        finally:
            await context.shutdown()

    assert run(good()).code == CONTENT, "the server still serves the right key afterwards"


async def post_many(port: int, box: str, count: int, after_last=None) -> list[tuple[int, bytes]]:
    """POSTs `count` distinct envelopes back to back; returns (id, envelope) of each one the
    server answered 2.01 Created for (the id from its Location-Path). `after_last` runs right
    after the last answer, before the client context is shut down."""
    context = await client(port)
    acknowledged = []
    try:
        for index in range(count):
            envelope = f"envelope {index} ".encode() + os.urandom(8).hex().encode()
            reply = await request(context, POST, port, f"/mb/{box}", envelope)
            assert reply.code == CREATED, (index, reply)
            acknowledged.append((int(reply.opt.location_path[2]), envelope))
        if after_last is not None:
            after_last()
    finally:
        await asyncio.wait_for(context.shutdown(), 20)
    return acknowledged


async def read_box(port: int, box: str, bound: int = 100) -> list[tuple[int, bytes]]:
    """Every envelope waiting in `box`, page by page (`after=`), at most `bound` pages."""
    context = await client(port)
    found: list[tuple[int, bytes]] = []
    try:
        for _ in range(bound):
            after = found[-1][0] if found else 0
            reply = await request(context, GET, port, f"/mb/{box}?after={after}")
            assert reply.code == CONTENT, reply
            page = frames(reply.payload)
            if not page:
                return found
            found.extend(page)
    finally:
        await context.shutdown()
    raise AssertionError(f"{box} still had envelopes after {bound} pages")


def test_envelopes_acknowledged_before_a_sigkill_are_there_after_the_restart(world):
    """A POST is answered once its envelope is appended to the pending log, and the log is moved
    into SQLite only after 50 ms without POSTs: a server killed right after a burst still has
    envelopes in the log. The next start moves them into the tables (and says so), drops a
    record cut short at the log's end, and serves every acknowledged envelope exactly once."""
    port = serve(world)
    server = world.processes.procs[-1]
    database = world.dir / "mailbox.sqlite"
    log = Path(str(database) + "-pending")

    server.expected_exit = True
    # Right after the last 2.01, well within the 50 ms without POSTs that the server waits before
    # it flushes: SIGKILL, no chance to clean up.
    acknowledged = run(post_many(port, "killed", 150, after_last=lambda: server.signal(signal.SIGKILL)))
    assert server.wait(10) == -signal.SIGKILL
    size = log.stat().st_size
    assert size > 64, f"the pending log holds {size} bytes: the server flushed before the kill (too slow a machine?)"
    # A write cut short by the kill: a record header promising more bytes than follow.
    with open(log, "ab") as torn:
        torn.write(b"\x00\x00\x01\x00torn")

    restarted = start_sotto_coap_server(
        world, "--listen", f"{LOOPBACK}:{port}", "--psk-identity", IDENTITY,
        "--psk-key-file", str(world.dir / "client.psk"), "--database", str(database), ports=[port])
    pattern = re.compile(r"moved (\d+) envelope\(s\) that the last run left in the pending log into the tables; "
                         r"dropped (\d+) byte\(s\)")
    # The store's lines follow the 'listening' line the start waited for.
    moved = wait_until(lambda: pattern.search(restarted.log_text()), 10,
                       "the restarted server to log what it moved from the pending log")
    assert 1 <= int(moved.group(1)) <= len(acknowledged), moved.group(0)
    assert int(moved.group(2)) == 8, moved.group(0)

    found = run(read_box(port, "killed"))
    assert found == acknowledged, f"{len(found)} envelopes after the restart, {len(acknowledged)} acknowledged"
    assert log.stat().st_size < size, "the log was emptied into the tables"
