#!/usr/bin/env python3
"""How low the chat round trip can go under a wire-byte budget, for any shaping that leaves an
observer at chance (docs/shaping.md, "How close any shaping can come to 5x and 100 ms").

Such a shaping sends on a schedule that does not depend on the data: in each direction the
instants and sizes of its segments are fixed in advance (random or not), and a message only
changes which of them carry real bytes. Two figures for a chat workload (messages of `--min` to
`--max` payload bytes, uniform, plus `--framing` bytes of CoAP and DTLS; a reply of `--reply`
bytes) under `--factor` times its application bytes per second on the wire, both directions
together, each segment also paying `--header` bytes (TCP/IP header and AEAD tag):

1. lower bound, any schedule: a message of m bytes needs at least m + h wire bytes to leave
   in the direction's next w seconds. With capacity C bytes/s the expected bytes in a window of
   w seconds at a random instant are C * w, so by Markov's inequality P(wait <= w) <= C * w /
   (m + h): the wait is stochastically at least uniform on [0, (m + h) / C]. The round trip
   adds the reply's wait, independent and bounded the same way, so its added p50 is at least
   the p50 of the sum of those two uniforms, averaged over the message sizes; minimized over
   the split of the budget between the directions. It ignores pure ACKs, queueing, processing
   and any cell size: a floor, not a design.
2. best evenly spaced schedule: one segment of P payload bytes every T seconds upwards, one
   of `--reply` bytes every T' downwards (evenly spaced is the best spacing for a given mean
   gap); a message of m bytes leaves in ceil(m / P) consecutive segments. Minimized over P
   and the split. Still no ACKs and no queueing: what a single-cell-size design can at best do.

Standard library only. Exit status 2 with a message on a bad option.
"""
from __future__ import annotations

import argparse
import math
import sys


CELL_OVERHEAD = 30      # docs/protocol.md: 16-byte tag and 14-byte cell header
TCP_IP_HEADER = 52      # IPv4 and TCP with timestamps, as the loopback capture sees them


def uniform_sum_cdf(w: float, a: float, b: float) -> float:
    """P(X + Y <= w) for independent X ~ U[0, a], Y ~ U[0, b] (a, b > 0)."""
    if a > b:
        a, b = b, a
    if w <= 0:
        return 0.0
    if w >= a + b:
        return 1.0
    if w <= a:
        return w * w / (2 * a * b)
    if w <= b:
        return (w - a / 2) / b
    rest = a + b - w
    return 1 - rest * rest / (2 * a * b)


def median(cdf, high: float = 60.0) -> float:
    """The smallest w with cdf(w) >= 1/2, by bisection to 1 us (cdf non-decreasing)."""
    low = 0.0
    while high - low > 1e-6:
        mid = (low + high) / 2
        if cdf(mid) < 0.5:
            low = mid
        else:
            high = mid
    return high


def messages(low: int, high: int, framing: int) -> list[int]:
    return [size + framing for size in range(low, high + 1)]


def lower_bound(budget: float, sizes: list[int], reply: int, header: int, up_share: float) -> float:
    """Bound 1 for one split: seconds. Every 5th size stands for its neighbours (the spans
    differ by 5 / C seconds at most: below 2 ms at these budgets)."""
    up, down = budget * up_share, budget * (1 - up_share)
    reply_span = (reply + header) / down
    spans = [(m + header) / up for m in sizes[2::5]] or [(sizes[0] + header) / up]
    return median(lambda w: sum(uniform_sum_cdf(w, s, reply_span) for s in spans) / len(spans))


def even_schedule(budget: float, sizes: list[int], reply: int, header: int, up_share: float, payload: int,
                  up_segment: int | None = None, down_segment: int | None = None) -> float:
    """Bound 2 for one split and segment payload: seconds. `up_segment` / `down_segment`: wire
    bytes of a segment when they are not payload (or reply) + header, as with fixed cells."""
    up, down = budget * up_share, budget * (1 - up_share)
    period_up = (up_segment or payload + header) / up
    period_down = (down_segment or reply + header) / down
    # A message in k segments waits U[0, T] + (k - 1) T, then the reply U[0, T'].
    counts: dict[int, int] = {}
    for m in sizes:
        k = math.ceil(m / payload)
        counts[k] = counts.get(k, 0) + 1
    return median(lambda w: sum(n * uniform_sum_cdf(w - (k - 1) * period_up, period_up, period_down)
                                for k, n in counts.items()) / len(sizes))


def best(function, shares=None, **kwargs) -> tuple[float, float]:
    """Minimum over the split of the budget (1 % steps from 50 % to 99 % upwards)."""
    shares = shares or [s / 100 for s in range(50, 100)]
    return min((function(up_share=share, **kwargs), share) for share in shares)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bound.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=2.0, help="messages per second (default 2)")
    p.add_argument("--min", type=int, default=50, help="smallest payload, bytes (default 50)")
    p.add_argument("--max", type=int, default=1000, help="largest payload, bytes (default 1000)")
    p.add_argument("--framing", type=int, default=40, help="CoAP + DTLS bytes per request (default 40)")
    p.add_argument("--reply", type=int, default=33, help="reply bytes with its framing (default 33)")
    p.add_argument("--factor", type=float, default=5.0, help="wire bytes per application byte (default 5)")
    p.add_argument("--cell", type=int, default=514,
                   help="also: fixed cells of this size both ways, as Sotto's (default 514; 0: no such row)")
    p.add_argument("--headers", default="0,16,56,68",
                   help="per-segment header bytes to tabulate, comma-separated (default 0,16,56,68)")
    args = p.parse_args(argv)
    try:
        args.header_list = [int(h) for h in args.headers.split(",")]
    except ValueError:
        p.error(f"--headers takes integers separated by commas, got {args.headers!r}")
    checks = [(0 < args.rate <= 1000, "--rate must be above 0 and at most 1000"),
              (1 <= args.min <= args.max <= 65000, "--min and --max must satisfy 1 <= min <= max <= 65000"),
              (0 <= args.framing <= 1000, "--framing must be 0-1000"),
              (1 <= args.reply <= 65000, "--reply must be 1-65000"),
              (0 < args.factor <= 1000, "--factor must be above 0 and at most 1000"),
              (args.cell == 0 or 128 <= args.cell <= 16384, "--cell must be 0 or 128-16384"),
              (all(0 <= h <= 1000 for h in args.header_list), "--headers must each be 0-1000")]
    for ok, message in checks:
        if not ok:
            p.error(message)
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    sizes = messages(args.min, args.max, args.framing)
    app = args.rate * (args.min + args.max) / 2
    budget = args.factor * app
    print(f"chat: {args.rate:g} messages/s of {args.min}-{args.max} bytes (+{args.framing} framing), reply {args.reply} bytes;"
          f" {app:,.0f} application bytes/s, budget {args.factor:g}x = {budget:,.0f} wire bytes/s both ways")
    print("| header bytes per segment | lower bound, any schedule: p50 added RTT (up share) "
          "| best evenly spaced schedule: p50 added RTT (segment payload, up share) |")
    print("| --- | --- | --- |")
    payloads = sorted({*range(100, args.max + args.framing + 1, 20), args.max + args.framing})
    for header in args.header_list:
        low, low_share = best(lower_bound, budget=budget, sizes=sizes, reply=args.reply, header=header)
        even = min((*best(even_schedule, budget=budget, sizes=sizes, reply=args.reply, header=header, payload=p), p)
                   for p in payloads)
        print(f"| {header} | {low * 1000:.0f} ms ({low_share:.0%}) | {even[0] * 1000:.0f} ms ({even[2]} bytes, {even[1]:.0%}) |")
    if args.cell:
        # Sotto's cells: cell - 16 (tag) - 14 (cell header) payload bytes each, k cells in one
        # segment per upward slot, one cell per slot back (the reply fits), 52 bytes of TCP/IP.
        per_cell = args.cell - CELL_OVERHEAD
        cells = min((*best(even_schedule, budget=budget, sizes=sizes, reply=args.reply, header=0, payload=k * per_cell,
                           up_segment=k * args.cell + TCP_IP_HEADER, down_segment=args.cell + TCP_IP_HEADER), k)
                    for k in (1, 2, 3))
        print(f"fixed {args.cell}-byte cells both ways ({per_cell} payload bytes each, +{TCP_IP_HEADER} bytes of TCP/IP a segment), "
              f"evenly spaced: {cells[0] * 1000:.0f} ms ({cells[2]} cell(s) per upward slot, {cells[1]:.0%} of the budget up)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
