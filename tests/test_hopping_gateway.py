"""An exit gateway in front of a hopping `sotto coap-server` (docs/channels.md, "An exit gateway in
front of a hopping server"), with real processes only:

`sotto msg send` -> the entry's local UDP forward -> tunnel -> exit, whose expose is
`udp 5684 127.0.0.1:hopping` -> the server's port of the moment; the server and the exit share a
`[hopping]` table with epochs of a few seconds. Sends run back to back across several boundaries,
each must be answered, and `sotto msg recv` then reads every message. The exit must have retired
each flow at the boundary where the server closed its port (`hop_flows_retired`).

Every process is stopped by its PID (the `world` fixture); every loop is bounded in count and time."""

from __future__ import annotations

import base64
import os
import re
import socket
import time

from sotto_e2e import LOOPBACK, start_pair, start_sotto_coap_server, udp_port_bound, wait_until
from test_msg_gateway import (channel_secret, describe, hop_port, member_config, recv, send, server_config,
                              write_secret)

EPOCH_SECONDS = 3
BOUNDARIES = 3           # crossed by the send loop at least
LOOP_LIMIT_SECONDS = 30  # the send loop's bound in time (it stops earlier once BOUNDARIES are crossed)
LOOP_LIMIT_SENDS = 200   # ... and in count
RANGE_SIZE = 1024


def pick_schedule(span_epochs: int) -> tuple[bytes, int, int]:
    """A secret and a range whose ports for the next `span_epochs` epochs are distinct and free, so
    every flow's port closes exactly two boundaries after its epoch began (the server listens on
    e-1, e, e+1) and no other process holds one of them."""
    for _ in range(200):
        secret = os.urandom(32)
        first = 20000 + int.from_bytes(os.urandom(2), "big") % (60000 - 20000 - RANGE_SIZE)
        last = first + RANGE_SIZE - 1
        now_epoch = int(time.time()) // EPOCH_SECONDS
        ports = [hop_port(secret, first, last, e) for e in range(now_epoch - 1, now_epoch + span_epochs)]
        if len(set(ports)) == len(ports) and not any(udp_port_bound(p) for p in ports):
            return secret, first, last
    raise AssertionError("no secret gave distinct free ports")


class Closing:
    """Closes a socket in the world's teardown."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def stop(self):
        self.sock.close()


def exit_flows(pair) -> tuple[int, int]:
    """(flows opened, flows open) over the exit's tunnels."""
    tunnels = [t for t in pair.exit.tunnels() if t["side"] == "exit"]
    return sum(t["flowsOpened"] for t in tunnels), sum(t["flowsOpen"] for t in tunnels)


def test_msg_through_an_exit_that_follows_a_hopping_server_loses_no_request_at_a_boundary(world):
    span = (LOOP_LIMIT_SECONDS + 40) // EPOCH_SECONDS
    secret, first, last = pick_schedule(span)
    hop_secret_b64 = base64.b64encode(secret)
    write_secret(world.dir / "hop.secret", hop_secret_b64 + b"\n")
    hopping = f"""
[hopping]
secret_file = "hop.secret"
range = "{first}-{last}"
epoch_seconds = {EPOCH_SECONDS}
"""
    channel_secret(world)
    server = start_sotto_coap_server(world, "--config", str(server_config(world, "mailbox", first, hopping)))
    epoch = int(time.time()) // EPOCH_SECONDS
    wait_until(lambda: all(udp_port_bound(hop_port(secret, first, last, e)) for e in (epoch, epoch + 1)), 5,
               "the server to listen on the current and next epoch's ports")
    # The exit's file carries the same [hopping] table (after [tunnel], before the profiles).
    pair = start_pair(world, extra_exposes=[f"udp 5684 {LOOPBACK}:hopping"], forwards=[("udp", 5684)],
                      exit_options={"tunnel_extra": hopping})
    assert "udp 5684 -> 127.0.0.1:hopping: port hopping over" in pair.exit.log_text(), pair.exit.log_text()[-2000:]
    forward = pair.forwards["udp 5684"]
    # The members know nothing of the hopping: they talk to the entry's fixed local forward.
    alice = member_config(world, "alice", forward)
    bob = member_config(world, "bob", forward)

    # A client that keeps its socket across boundaries: its flow is retired with its port, and its
    # next datagram must open a new flow (the entry forgot the old one on the exit's close).
    lingering = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lingering.bind((LOOPBACK, 0))
    world.server(Closing(lingering))
    lingering.sendto(b"not a DTLS record, ignored by the server", (LOOPBACK, forward))
    wait_until(lambda: exit_flows(pair)[0] >= 1, 10, "the exit to open the lingering client's flow")

    sent, failures, epochs = 0, [], set()
    started = time.monotonic()
    for i in range(LOOP_LIMIT_SENDS):
        if time.monotonic() - started >= LOOP_LIMIT_SECONDS or len(epochs) > BOUNDARIES:
            break
        epochs.add(int(time.time()) // EPOCH_SECONDS)
        result = send(world, alice, f"message {i}", box="hop", timeout=10)
        sent += 1
        if result.returncode != 0:
            failures.append((i, time.time() % EPOCH_SECONDS, describe(result)))
    elapsed = time.monotonic() - started
    got = recv(world, bob, "hop", "--delete")
    opened_before, _ = exit_flows(pair)
    lingering.sendto(b"still not a DTLS record", (LOOPBACK, forward))
    wait_until(lambda: exit_flows(pair)[0] == opened_before + 1, 10,
               "the lingering client's next datagram to open a new flow at the exit")
    last_epoch = int(time.time()) // EPOCH_SECONDS
    print(f"\nhopping through the exit: {sent} sends in {elapsed:.1f} s over epochs {sorted(epochs)}, "
          f"{len(failures)} failed")

    assert not failures, (f"{len(failures)} of {sent} sends failed (index, seconds into the epoch, result): "
                          f"{failures[:3]}\n{pair.exit.log_text()[-3000:]}\n{server.log_text()[-3000:]}")
    assert len(epochs) > BOUNDARIES, f"the loop crossed too few boundaries: epochs {sorted(epochs)} in {elapsed:.1f} s"
    assert got.returncode == 0, describe(got)
    assert sorted(got.stdout.decode().splitlines()) == sorted(f"alice: message {i}" for i in range(sent)), describe(got)
    assert f"{sent} message(s) opened, 0 rejected".encode() in got.stderr, describe(got)

    # Every flow began at the latest in the epoch the recv ended in; its port closes two boundaries
    # later. Once that boundary is behind us, every flow the exit opened has been retired there.
    retire_by = (last_epoch + 2) * EPOCH_SECONDS + 0.5
    wait_until(lambda: time.time() >= retire_by, 3 * EPOCH_SECONDS, "the last flow's retirement boundary",
               interval=0.1)
    opened, still_open = wait_until(lambda: (lambda o: o if o[1] == 0 else None)(exit_flows(pair)), 5,
                                    "the exit to have no open flow")
    retired = pair.exit.counters()["hop_flows_retired"]
    # About one flow per send: each run has a socket of its own, but the kernel may give a later run
    # the source port of an earlier one whose flow is still live, and that run then shares the flow.
    assert opened > sent // 2 + 2, f"the exit opened {opened} flows for {sent} sends, a recv and the lingering client"
    assert retired == opened, f"{retired} flows retired, {opened} opened"

    # One log line per port and boundary, with the port, never the secret.
    log = pair.exit.log_text()
    lines = re.findall(r"udp 5684 -> 127\.0\.0\.1:hopping: retired (\d+) flow\(s\) to port (\d+) at the epoch boundary",
                       log)
    assert sum(int(n) for n, _ in lines) == retired, lines
    schedule_ports = {hop_port(secret, first, last, e) for e in range(min(epochs) - 1, last_epoch + 2)}
    assert {int(p) for _, p in lines} <= schedule_ports, (lines, sorted(schedule_ports))
    assert len({p for _, p in lines}) >= BOUNDARIES, f"flows were retired at too few ports: {lines}"
    assert hop_secret_b64.decode()[:16] not in log
    # The server closed old epochs' ports meanwhile.
    assert "stopped listening on coaps://" in server.log_text()
