#!/usr/bin/env python3
"""Traffic-analysis resistance of Sotto's shaping policies (issue 5), from packet captures.

Standard library only (python3 >= 3.11). Usage:

    analyze.py MANIFEST --out DIR [--sweep] [--folds 5] [--repeats 5] [--permutations 2] [--seed N]

The manifest (written by measure.sh) names, per run, a classic pcap of the tunnel's one TCP
connection between entry and exit gateway, the exit's port and the phases of the timeline
(idle, chat, bulk) in Unix epoch seconds, the clock of the pcap timestamps.

Method (the same text, longer, is Benchmarks/shaping/METHOD.md)
----------------------------------------------------------------

1. Parsing. Classic pcap (both byte orders, micro- and nanosecond timestamps), link types
   Ethernet (1, with up to 2 VLAN tags), Linux cooked SLL (113) and SLL2 (276), raw IP (101,
   12) and BSD loopback (0, 108); IPv4 and IPv6 (hop-by-hop, routing and destination-options
   headers skipped). Per TCP segment on the tunnel port: time (integer nanoseconds), direction
   (destination port = tunnel port: "up", entry -> exit; source port: "down"), the IP total
   length (wire bytes, read from the IP header because the snaplen cuts the capture) and the
   TCP payload length. Every other record is skipped and counted by reason. A malformed file
   (short global header, bad magic, unknown link type, short record, a captured length beyond
   the end of the file) is an error naming the file and the byte offset.

2. Windows. Each phase [start, end) is cut into windows of `window_seconds`; the partial last
   window and the first window (a guard against the transition between phases) are dropped.
   Features per window and direction: segments with payload ("pkts"), payload bytes, pure
   ACKs (payload 0), the mean, standard deviation (population) and maximum of the gaps between
   consecutive payload segments of that direction whose later segment falls in the window
   (the earlier one may lie before the window), and the number of payload segments whose size
   is not a multiple of cell_size ("partial"). A window without any such gap uses the open
   gap instead: window end minus the last payload segment before it (the window length if
   there is none), standard deviation 0. Totals over both directions of pkts, bytes, acks and
   partial complete the 18 features.

3. Classifier AUC, idle vs chat and idle vs bulk (positive class: the busy phase). Stratified
   k-fold cross-validation (k = 5), repeated with different seeded shuffles (5 repeats, seed
   fixed): for each fold,
   (a) logistic regression: features standardized with the training folds' mean and standard
       deviation (a constant feature becomes 0), full-batch gradient descent on the mean log
       loss plus L2 (lambda 0.01, bias not penalized) from zero weights, step 1/L with L =
       0.25 x lambda_max + lambda (a bound on the gradient's Lipschitz constant; lambda_max is
       1.2 x a 30-step power-iteration estimate of the largest eigenvalue of [1 X]^T [1 X] / n,
       at least 1, at most the trace bound: non-constant features + 1), at most 300 iterations,
       stopping early when every gradient component is below 1e-5; the score is the linear
       predictor;
   (b) every single feature as a score, its sign chosen on the training folds (negated when
       its training AUC is below 0.5; exactly 0.5 keeps the sign).
   AUC on the test fold by the Mann-Whitney statistic, ties counted half. A classifier's AUC
   is its mean over all folds and repeats. The observer's AUC is the logistic regression's:
   one classifier fixed in advance, using every feature (it can weight any single feature as
   much as it needs), so that its AUC on identically distributed classes is 0.5 up to noise.
   The best single feature's mean AUC is reported too ("best_single_feature"); it is picked
   after seeing the test folds, which lifts it above 0.5 on identical classes (about 0.55-0.60
   with 60 and 120 windows), so it serves as a diagnostic (which feature leaks), not as the
   figure the targets use. A class with more than 1,000 windows is subsampled (seeded) to
   1,000. Fewer than 10 windows in a class: the AUC is null, with the reason. The chance level
   of the observer's AUC is reported next to it: the same procedure on the same windows with
   the labels shuffled (same class
   sizes; 2 seeded permutations by default, --permutations).

4. Overhead, per phase over [start, end): wire bytes (sum of IP total lengths, both
   directions) / application bytes, and cell bytes (TCP payload bytes) / application bytes,
   for chat and bulk; for idle the wire bytes per second. Bulk goodput: app bytes / duration.

5. Latency. Chat RTT p50/p99 (linear interpolation between order statistics); added latency:
   this run's p50/p99 minus those of the baseline run (the first run with policy "off",
   preferring one marked default); null when there is none. The shapers' own
   addedLatencyP50Ms/P99Ms (per cell, one direction) are passed through when the manifest
   has them.

6. Targets (issue 5), reported as met / not met / unknown, never asserted: every `off` run's
   AUC idle/chat >= 0.9 ("near 1.0"); each default `constant` run's AUC idle/chat <= 0.55,
   chat overhead (wire) <= 5x and added RTT p50 (vs off) <= 100 ms.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import operator
import random
import re
import struct
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

# ---------------------------------------------------------------------------------------------
# Limits (all explicit; exceeding one is an error or a counted, reported subsample)

MAX_RECORDS = 50_000_000          # pcap records per file
MAX_CAPLEN = 262_144              # captured bytes of one record
MAX_RUNS = 1_000                  # runs per manifest
MAX_PHASES = 32                   # phases per run
MAX_WINDOWS_PER_PHASE = 200_000
MAX_RTT_SAMPLES = 1_000_000
MAX_CV_WINDOWS = 1_000            # per class; more are subsampled (seeded)
MAX_FOLDS = 20
MAX_REPEATS = 50
MAX_BINS = 20_000                 # plot bins per run (the bin grows beyond that)
MAX_VLAN_TAGS = 2
MAX_IPV6_EXTENSIONS = 8

CELL_SIZE_DEFAULT = 514
WINDOW_SECONDS_DEFAULT = 1.0
GUARD_WINDOWS = 1
MIN_WINDOWS_PER_CLASS = 10
FOLDS_DEFAULT = 5
REPEATS_DEFAULT = 5
PERMUTATIONS_DEFAULT = 2
MAX_PERMUTATIONS = 20
SEED_DEFAULT = 5_2025
LOGISTIC_ITERATIONS = 300
LOGISTIC_L2 = 0.01
LOGISTIC_TOLERANCE = 1e-5
POWER_ITERATIONS = 30
PLOT_BIN_SECONDS = 0.25

TARGET_OFF_AUC_MIN = 0.9
TARGET_CONSTANT_AUC_MAX = 0.55
TARGET_CONSTANT_OVERHEAD_MAX = 5.0
TARGET_CONSTANT_ADDED_P50_MAX_MS = 100.0

NS = 1_000_000_000
POLICY_ORDER = {"off": 0, "padded": 1, "constant": 2, "poisson": 3}


class PcapError(ValueError):
    """A pcap file that cannot be read; the message names the file and the byte offset."""


class ManifestError(ValueError):
    """A manifest that does not have the fields analyze.py needs; the message names the field."""


# ---------------------------------------------------------------------------------------------
# 1. pcap parsing

LINK_NULL, LINK_ETHERNET, LINK_RAW12, LINK_RAW, LINK_LOOP, LINK_SLL, LINK_SLL2 = 0, 1, 12, 101, 108, 113, 276
SUPPORTED_LINKS = {LINK_NULL: "BSD loopback", LINK_ETHERNET: "Ethernet", LINK_RAW12: "raw IP",
                   LINK_RAW: "raw IP", LINK_LOOP: "OpenBSD loopback", LINK_SLL: "Linux cooked (SLL)",
                   LINK_SLL2: "Linux cooked v2 (SLL2)"}
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
# magic as read from the file -> (struct byte order, nanoseconds per fraction unit)
MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

UP, DOWN = 1, 0
DIRECTIONS = (("up", UP), ("down", DOWN))


class Packet(NamedTuple):
    time_ns: int
    direction: str      # "up" (entry -> exit) or "down"
    ip_len: int         # IP total length: header + payload, the bytes on the wire above the link
    payload: int        # TCP payload length


@dataclass
class Capture:
    """The tunnel's TCP segments of one pcap, sorted by time, in parallel arrays."""
    name: str
    link_type: int
    nanosecond: bool
    records: int = 0
    time_ns: array = field(default_factory=lambda: array("q"))
    up: array = field(default_factory=lambda: array("b"))
    ip_len: array = field(default_factory=lambda: array("q"))
    payload: array = field(default_factory=lambda: array("q"))
    skipped: dict[str, int] = field(default_factory=dict)
    connections: int = 0

    def __len__(self) -> int:
        return len(self.time_ns)

    def packets(self) -> list[Packet]:
        return [Packet(t, "up" if u else "down", n, p)
                for t, u, n, p in zip(self.time_ns, self.up, self.ip_len, self.payload)]

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _u16(data: bytes, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]


def _network_layer(link: int, data: bytes, order: str) -> tuple[int, int] | str:
    """(ethertype, offset of the IP header) or a skip reason."""
    if link == LINK_ETHERNET:
        if len(data) < 14:
            return "truncated"
        ethertype, offset = _u16(data, 12), 14
        for _ in range(MAX_VLAN_TAGS):
            if ethertype not in (0x8100, 0x88A8):
                break
            if len(data) < offset + 4:
                return "truncated"
            ethertype, offset = _u16(data, offset + 2), offset + 4
        return ethertype, offset
    if link == LINK_SLL:
        return (_u16(data, 14), 16) if len(data) >= 16 else "truncated"
    if link == LINK_SLL2:
        return (_u16(data, 0), 20) if len(data) >= 20 else "truncated"
    if link in (LINK_RAW, LINK_RAW12):
        if not data:
            return "truncated"
        version = data[0] >> 4
        return (ETH_IPV4, 0) if version == 4 else (ETH_IPV6, 0) if version == 6 else "not_ip"
    if link in (LINK_NULL, LINK_LOOP):
        if len(data) < 4:
            return "truncated"
        family = struct.unpack((order if link == LINK_NULL else ">") + "I", data[:4])[0]
        if family == 2:
            return ETH_IPV4, 4
        if family in (10, 24, 28, 30):
            return ETH_IPV6, 4
        return "not_ip"
    raise AssertionError(f"link type {link} passed the header check")


def decode_tcp(link: int, data: bytes, order: str = "<") -> tuple[int, int, int, int] | str:
    """(source port, destination port, IP total length, TCP payload length) of one captured
    record, or the reason to skip it: truncated, not_ip, bad_ip, ip_fragment, not_tcp, bad_tcp."""
    layer = _network_layer(link, data, order)
    if isinstance(layer, str):
        return layer
    ethertype, off = layer
    if ethertype == ETH_IPV4:
        if len(data) < off + 20:
            return "truncated"
        if data[off] >> 4 != 4:
            return "bad_ip"
        header = (data[off] & 0x0F) * 4
        total = _u16(data, off + 2)
        if header < 20 or total < header:
            return "bad_ip"
        if _u16(data, off + 6) & 0x3FFF:          # more-fragments flag or a fragment offset
            return "ip_fragment"
        protocol, l4, l4_len, ip_len = data[off + 9], off + header, total - header, total
    elif ethertype == ETH_IPV6:
        if len(data) < off + 40:
            return "truncated"
        if data[off] >> 4 != 6:
            return "bad_ip"
        payload_len = _u16(data, off + 4)
        if payload_len == 0:                        # jumbogram or empty: not a tunnel segment
            return "bad_ip"
        protocol, l4, l4_len, ip_len = data[off + 6], off + 40, payload_len, 40 + payload_len
        for _ in range(MAX_IPV6_EXTENSIONS + 1):
            if protocol == 44:
                return "ip_fragment"
            if protocol not in (0, 43, 60):
                break
            if len(data) < l4 + 2:
                return "truncated"
            ext_len = (data[l4 + 1] + 1) * 8
            protocol, l4, l4_len = data[l4], l4 + ext_len, l4_len - ext_len
            if l4_len < 0:
                return "bad_ip"
        else:
            return "bad_ip"
    else:
        return "not_ip"
    if protocol != 6:
        return "not_tcp"
    if len(data) < l4 + 13:
        return "truncated"
    data_offset = (data[l4 + 12] >> 4) * 4
    if data_offset < 20 or data_offset > l4_len:
        return "bad_tcp"
    return _u16(data, l4), _u16(data, l4 + 2), ip_len, l4_len - data_offset


def parse_pcap(stream: BinaryIO, tunnel_port: int, name: str = "<pcap>",
               max_records: int = MAX_RECORDS) -> Capture:
    """Reads a classic pcap from `stream`; keeps the TCP segments to or from `tunnel_port`."""
    head = stream.read(24)
    if len(head) < 24:
        raise PcapError(f"{name}: offset 0: truncated global header ({len(head)} of 24 bytes)")
    magic = head[:4]
    if magic == PCAPNG_MAGIC:
        raise PcapError(f"{name}: offset 0: this is pcapng, not classic pcap (capture with "
                        f"`tcpdump -w`, or convert with `editcap -F pcap`)")
    if magic not in MAGICS:
        raise PcapError(f"{name}: offset 0: bad magic {magic.hex()} (not a classic pcap file)")
    order, ns_per_unit = MAGICS[magic]
    major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "HHiIII", head[4:])
    if major != 2:
        raise PcapError(f"{name}: offset 4: unsupported pcap version {major}")
    link = network & 0x0FFFFFFF
    if link not in SUPPORTED_LINKS:
        raise PcapError(f"{name}: offset 20: unknown link type {link} (supported: "
                        f"{', '.join(f'{k} {v}' for k, v in sorted(SUPPORTED_LINKS.items()))})")
    capture = Capture(name=name, link_type=link, nanosecond=ns_per_unit == 1)
    record = struct.Struct(order + "IIII")
    fraction_limit = NS // ns_per_unit
    peers: set[int] = set()
    offset = 24
    for _ in range(max_records + 1):
        header = stream.read(16)
        if not header:
            break
        if capture.records >= max_records:
            raise PcapError(f"{name}: offset {offset}: more than {max_records} records (limit)")
        if len(header) < 16:
            raise PcapError(f"{name}: offset {offset}: truncated record header ({len(header)} of 16 bytes)")
        seconds, fraction, caplen, _origlen = record.unpack(header)
        if fraction >= fraction_limit:
            raise PcapError(f"{name}: offset {offset}: timestamp fraction {fraction} out of range "
                            f"(< {fraction_limit})")
        if caplen > MAX_CAPLEN:
            raise PcapError(f"{name}: offset {offset}: captured length {caplen} above the limit {MAX_CAPLEN}")
        data = stream.read(caplen)
        if len(data) < caplen:
            raise PcapError(f"{name}: offset {offset}: captured length {caplen} but only {len(data)} "
                            f"bytes left in the file")
        capture.records += 1
        offset += 16 + caplen
        decoded = decode_tcp(link, data, order)
        if isinstance(decoded, str):
            capture.skipped[decoded] = capture.skipped.get(decoded, 0) + 1
            continue
        sport, dport, ip_len, payload = decoded
        if dport == tunnel_port:
            direction, peer = UP, sport
        elif sport == tunnel_port:
            direction, peer = DOWN, dport
        else:
            capture.skipped["other_port"] = capture.skipped.get("other_port", 0) + 1
            continue
        peers.add(peer)
        capture.time_ns.append(seconds * NS + fraction * ns_per_unit)
        capture.up.append(direction)
        capture.ip_len.append(ip_len)
        capture.payload.append(payload)
    capture.connections = len(peers)
    _sort_by_time(capture)
    return capture


def _sort_by_time(capture: Capture) -> None:
    times = capture.time_ns
    if all(times[i - 1] <= times[i] for i in range(1, len(times))):
        return
    order = sorted(range(len(times)), key=times.__getitem__)
    for name in ("time_ns", "up", "ip_len", "payload"):
        old = getattr(capture, name)
        setattr(capture, name, array(old.typecode, (old[i] for i in order)))


def read_pcap(path: Path, tunnel_port: int) -> Capture:
    try:
        with open(path, "rb") as stream:
            return parse_pcap(stream, tunnel_port, name=str(path))
    except OSError as error:
        raise PcapError(f"{path}: cannot read: {error.strerror or error}") from error


# ---------------------------------------------------------------------------------------------
# 2. Windows and features

DIRECTION_FEATURES = ("pkts", "bytes", "acks", "iat_mean", "iat_std", "iat_max", "partial")
TOTAL_FEATURES = ("pkts", "bytes", "acks", "partial")
FEATURES = tuple(f"{d}_{f}" for d, _ in DIRECTIONS for f in DIRECTION_FEATURES) + \
    tuple(f"total_{f}" for f in TOTAL_FEATURES)


def _prefix(values) -> array:
    sums, running = array("q", [0]), 0
    for value in values:
        running += value
        sums.append(running)
    return sums


@dataclass
class DirectionIndex:
    times: array          # every segment of the direction
    wire: array           # prefix sums of IP total length
    cells: array          # prefix sums of payload bytes
    pay_times: array      # segments with payload
    pay_bytes: array      # prefix sums over segments with payload
    partial: array        # prefix sums of (payload % cell_size != 0)
    ack_times: array      # segments without payload


class Index:
    """Per-direction sorted times and prefix sums for O(log n) window and phase queries."""

    def __init__(self, capture: Capture, cell_size: int):
        self.cell_size = cell_size
        self.directions: dict[str, DirectionIndex] = {}
        for name, code in DIRECTIONS:
            rows = [(t, n, p) for t, u, n, p in zip(capture.time_ns, capture.up, capture.ip_len,
                                                    capture.payload) if u == code]
            payload_rows = [(t, p) for t, _, p in rows if p > 0]
            self.directions[name] = DirectionIndex(
                times=array("q", (t for t, _, _ in rows)),
                wire=_prefix(n for _, n, _ in rows),
                cells=_prefix(p for _, _, p in rows),
                pay_times=array("q", (t for t, _ in payload_rows)),
                pay_bytes=_prefix(p for _, p in payload_rows),
                partial=_prefix(1 if p % cell_size else 0 for _, p in payload_rows),
                ack_times=array("q", (t for t, _, p in rows if p == 0)),
            )


def phase_windows(start_ns: int, end_ns: int, window_ns: int, guard: int = GUARD_WINDOWS) -> list[tuple[int, int]]:
    """Whole windows of [start, end), without the first `guard` ones and the partial last."""
    if window_ns <= 0:
        raise ValueError("window length must be positive")
    count = max(0, (end_ns - start_ns) // window_ns)
    if count > MAX_WINDOWS_PER_PHASE + guard:
        raise ManifestError(f"a phase of {count} windows is above the limit {MAX_WINDOWS_PER_PHASE}")
    return [(start_ns + i * window_ns, start_ns + (i + 1) * window_ns) for i in range(guard, count)]


def window_features(index: Index, start_ns: int, end_ns: int) -> list[float]:
    """The FEATURES of one window [start, end)."""
    values: list[float] = []
    totals = [0, 0, 0, 0]
    for name, _ in DIRECTIONS:
        d = index.directions[name]
        lo = bisect.bisect_left(d.pay_times, start_ns)
        hi = bisect.bisect_left(d.pay_times, end_ns)
        pkts, nbytes, partial = hi - lo, d.pay_bytes[hi] - d.pay_bytes[lo], d.partial[hi] - d.partial[lo]
        acks = bisect.bisect_left(d.ack_times, end_ns) - bisect.bisect_left(d.ack_times, start_ns)
        times = d.pay_times
        gaps = [times[k] - times[k - 1] for k in range(max(lo, 1), hi)]
        if gaps:
            mean = sum(gaps) / len(gaps)
            std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
            iat = (mean / NS, std / NS, max(gaps) / NS)
        else:
            open_gap = end_ns - times[hi - 1] if hi > 0 else end_ns - start_ns
            iat = (open_gap / NS, 0.0, open_gap / NS)
        values += [pkts, nbytes, acks, *iat, partial]
        totals = [totals[0] + pkts, totals[1] + nbytes, totals[2] + acks, totals[3] + partial]
    return [float(v) for v in values + totals]


def phase_traffic(index: Index, start_ns: int, end_ns: int) -> dict:
    """Segments, wire bytes and cell (payload) bytes of [start, end), per direction and total."""
    result: dict = {}
    for name, _ in DIRECTIONS:
        d = index.directions[name]
        lo, hi = bisect.bisect_left(d.times, start_ns), bisect.bisect_left(d.times, end_ns)
        plo, phi = bisect.bisect_left(d.pay_times, start_ns), bisect.bisect_left(d.pay_times, end_ns)
        result[name] = {"segments": hi - lo, "payload_segments": phi - plo,
                        "wire_bytes": d.wire[hi] - d.wire[lo], "cell_bytes": d.cells[hi] - d.cells[lo]}
    result["total"] = {key: result["up"][key] + result["down"][key] for key in result["up"]}
    return result


# ---------------------------------------------------------------------------------------------
# 3. AUC and cross-validated classifiers

def auc(negatives, positives) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(equal): the Mann-Whitney U / (n0 n1)."""
    n0, n1 = len(negatives), len(positives)
    if n0 == 0 or n1 == 0:
        raise ValueError("AUC needs at least one score in each class")
    scored = sorted([(float(s), 0) for s in negatives] + [(float(s), 1) for s in positives])
    if not all(math.isfinite(s) for s, _ in scored):
        raise ValueError("AUC of non-finite scores")
    rank_sum, i, n = 0.0, 0, len(scored)
    while i < n:                                   # tie groups: each gets its mean rank
        j = i
        while j + 1 < n and scored[j + 1][0] == scored[i][0]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(label for _, label in scored[i:j + 1])
        i = j + 1
    return (rank_sum - n1 * (n1 + 1) / 2) / (n0 * n1)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass
class LogisticModel:
    means: list[float]
    scales: list[float]
    weights: list[float]
    bias: float
    iterations: int

    def score(self, row) -> float:
        return self.bias + sum(w * (x - m) / s for w, x, m, s in zip(self.weights, row, self.means, self.scales))


def _largest_eigenvalue(std_cols: list[list[float]], active: int) -> float:
    """Estimate of the largest eigenvalue of [1 X]^T [1 X] / n for standardized X (the bias column is
    orthogonal to the centred columns and adds the eigenvalue 1): a bounded power iteration, times
    1.2 as a margin, never above the trace bound active + 1."""
    n = len(std_cols[0]) if std_cols else 0
    if n == 0 or active == 0:
        return 1.0
    vector, estimate = [1.0] * len(std_cols), 1.0
    for _ in range(POWER_ITERATIONS):
        row_sums = [sum(values) for values in zip(*[[x * v for x in c] for c, v in zip(std_cols, vector)])]
        projected = [sum(map(operator.mul, c, row_sums)) / n for c in std_cols]
        norm = math.sqrt(sum(v * v for v in projected))
        if norm == 0:
            break
        estimate, vector = norm / math.sqrt(sum(v * v for v in vector)), [v / norm for v in projected]
    return min(max(1.0, 1.2 * estimate), active + 1.0)


def fit_logistic(rows: list[list[float]], labels: list[int], l2: float = LOGISTIC_L2,
                 iterations: int = LOGISTIC_ITERATIONS, tolerance: float = LOGISTIC_TOLERANCE) -> LogisticModel:
    n, d = len(rows), len(rows[0])
    columns = [list(c) for c in zip(*rows)]
    means = [sum(c) / n for c in columns]
    scales = []
    for c, m in zip(columns, means):
        s = math.sqrt(sum((x - m) ** 2 for x in c) / n)
        scales.append(s if s > 0 else 1.0)
    active = sum(1 for c, m in zip(columns, means) if any(x != m for x in c))
    std_cols = [[(x - m) / s for x in c] for c, m, s in zip(columns, means, scales)]
    std_rows = [list(r) for r in zip(*std_cols)] if d else [[] for _ in range(n)]
    step = 1.0 / (0.25 * _largest_eigenvalue(std_cols, active) + l2)
    weights, bias, done = [0.0] * d, 0.0, 0
    for done in range(1, iterations + 1):
        residuals = [_sigmoid(bias + sum(map(operator.mul, weights, r))) - y for r, y in zip(std_rows, labels)]
        grad_b = sum(residuals) / n
        grad_w = [sum(map(operator.mul, residuals, c)) / n + l2 * w for c, w in zip(std_cols, weights)]
        bias -= step * grad_b
        weights = [w - step * g for w, g in zip(weights, grad_w)]
        if max([abs(grad_b)] + [abs(g) for g in grad_w]) < tolerance:
            break
    return LogisticModel(means, scales, weights, bias, done)


def _fold_assignment(n: int, folds: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    assignment = [0] * n
    for position, item in enumerate(order):
        assignment[item] = position % folds
    return assignment


def _summary(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)),
            "min": min(values), "max": max(values), "folds": len(values)}


def classify(negatives: list[list[float]], positives: list[list[float]], names=FEATURES,
             folds: int = FOLDS_DEFAULT, repeats: int = REPEATS_DEFAULT, seed: int = SEED_DEFAULT,
             min_per_class: int = MIN_WINDOWS_PER_CLASS, max_per_class: int = MAX_CV_WINDOWS,
             permutations: int = 0) -> dict:
    """Cross-validated AUCs of logistic regression and single-feature scores (negatives: label 0).
    With `permutations` > 0, also the observer's AUC on the same windows with the class labels
    shuffled (same class sizes): the observer's chance level."""
    result: dict = {"windows": {"negative": len(negatives), "positive": len(positives)},
                    "observer_auc": None, "best_classifier": None, "classifiers": {}, "reason": None}
    if not 2 <= folds <= MAX_FOLDS or not 1 <= repeats <= MAX_REPEATS or not 0 <= permutations <= MAX_PERMUTATIONS:
        raise ValueError(f"folds must be 2..{MAX_FOLDS}, repeats 1..{MAX_REPEATS}, permutations 0..{MAX_PERMUTATIONS}")
    short = [f"{label} has {len(rows)}" for label, rows in (("negative", negatives), ("positive", positives))
             if len(rows) < max(min_per_class, folds)]
    if short:
        result["reason"] = f"fewer than {max(min_per_class, folds)} windows in a class ({', '.join(short)})"
        return result
    sampler = random.Random(f"{seed}:subsample")
    subsampled = {}
    if len(negatives) > max_per_class:
        subsampled["negative"], negatives = len(negatives), sampler.sample(negatives, max_per_class)
    if len(positives) > max_per_class:
        subsampled["positive"], positives = len(positives), sampler.sample(positives, max_per_class)
    if subsampled:
        result["subsampled_from"] = subsampled
    scores: dict[str, list[float]] = {"logistic": [], **{f"threshold:{n}": [] for n in names}}
    for repeat in range(repeats):
        rng = random.Random(f"{seed}:{repeat}")
        neg_fold = _fold_assignment(len(negatives), folds, rng)
        pos_fold = _fold_assignment(len(positives), folds, rng)
        for fold in range(folds):
            train_neg = [r for r, f in zip(negatives, neg_fold) if f != fold]
            train_pos = [r for r, f in zip(positives, pos_fold) if f != fold]
            test_neg = [r for r, f in zip(negatives, neg_fold) if f == fold]
            test_pos = [r for r, f in zip(positives, pos_fold) if f == fold]
            model = fit_logistic(train_neg + train_pos, [0] * len(train_neg) + [1] * len(train_pos))
            scores["logistic"].append(auc([model.score(r) for r in test_neg], [model.score(r) for r in test_pos]))
            for j, name in enumerate(names):
                sign = 1.0 if auc([r[j] for r in train_neg], [r[j] for r in train_pos]) >= 0.5 else -1.0
                scores[f"threshold:{name}"].append(auc([sign * r[j] for r in test_neg],
                                                       [sign * r[j] for r in test_pos]))
    result["classifiers"] = {name: _summary(values) for name, values in scores.items()}
    singles = [k for k in result["classifiers"] if k.startswith("threshold:")]
    best = max(singles, key=lambda k: result["classifiers"][k]["mean"])  # first wins ties
    result["best_classifier"] = "logistic"
    result["observer_auc"] = result["classifiers"]["logistic"]["mean"]
    result["best_single_feature"] = {"name": best.removeprefix("threshold:"), "auc": result["classifiers"][best]["mean"]}
    if permutations:
        chance = []
        for p in range(permutations):
            pooled = negatives + positives
            random.Random(f"{seed}:permutation:{p}").shuffle(pooled)
            shuffled = classify(pooled[:len(negatives)], pooled[len(negatives):], names, folds, repeats, seed,
                                min_per_class, max_per_class, permutations=0)
            chance.append(shuffled["observer_auc"])
        result["chance_observer_auc"] = {"mean": sum(chance) / len(chance), "max": max(chance), "values": chance,
                                         "permutations": permutations}
    return result


# ---------------------------------------------------------------------------------------------
# 4./5. Overhead and latency

def percentile(values, q: float) -> float | None:
    """Linear interpolation between the order statistics (numpy's default); None when empty."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(position), math.ceil(position)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


def overhead(traffic: dict, app_bytes, duration_s: float) -> dict:
    """Wire and cell bytes (both directions) over application bytes; per second for idle."""
    wire, cells = traffic["total"]["wire_bytes"], traffic["total"]["cell_bytes"]
    result = {"wire_bytes": wire, "cell_bytes": cells, "app_bytes": app_bytes, "seconds": duration_s,
              "wire_bytes_per_s": wire / duration_s if duration_s > 0 else None,
              "wire_per_app": None, "cells_per_app": None}
    if isinstance(app_bytes, (int, float)) and app_bytes > 0:
        result["wire_per_app"] = wire / app_bytes
        result["cells_per_app"] = cells / app_bytes
    return result


def _difference(a, b):
    return None if a is None or b is None else a - b


# ---------------------------------------------------------------------------------------------
# Manifest

@dataclass
class Phase:
    name: str
    start_ns: int
    end_ns: int
    raw: dict


@dataclass
class Run:
    number: int
    label: str
    policy: str | None
    params: dict
    default: bool
    plot: bool
    pcap: Path
    tunnel_port: int
    phases: list[Phase]
    raw: dict


def _number(value, where: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestError(f"{where}: expected a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ManifestError(f"{where}: {value} outside [{low}, {high}]")
    return value


def load_manifest(path: Path) -> tuple[dict, list[Run]]:
    try:
        manifest = json.loads(Path(path).read_text())
    except OSError as error:
        raise ManifestError(f"{path}: cannot read: {error.strerror or error}") from error
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    cell_size = int(_number(manifest.get("cell_size", CELL_SIZE_DEFAULT), "cell_size", 1, 65535))
    window = _number(manifest.get("window_seconds", WINDOW_SECONDS_DEFAULT), "window_seconds", 0.001, 3600)
    runs_raw = manifest.get("runs")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise ManifestError("runs: expected a non-empty list")
    if len(runs_raw) > MAX_RUNS:
        raise ManifestError(f"runs: {len(runs_raw)} above the limit {MAX_RUNS}")
    base = Path(path).resolve().parent
    runs = []
    for number, raw in enumerate(runs_raw):
        where = f"runs[{number}]"
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected an object")
        label = raw.get("label", f"run {number}")
        if not isinstance(label, str) or not label.strip():
            raise ManifestError(f"{where}.label: expected a non-empty string")
        policy = raw.get("policy")
        if policy is not None and not isinstance(policy, str):
            raise ManifestError(f"{where}.policy: expected a string")
        params = raw.get("params", {})
        if not isinstance(params, dict):
            raise ManifestError(f"{where}.params: expected an object")
        pcap = raw.get("pcap")
        if not isinstance(pcap, str) or not pcap:
            raise ManifestError(f"{where}.pcap: expected a path")
        port = raw.get("tunnel_port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ManifestError(f"{where}.tunnel_port: expected an integer 1..65535, got {port!r}")
        phases_raw = raw.get("phases")
        if not isinstance(phases_raw, list) or not phases_raw or len(phases_raw) > MAX_PHASES:
            raise ManifestError(f"{where}.phases: expected a list of 1..{MAX_PHASES} phases")
        phases, names = [], set()
        for k, p in enumerate(phases_raw):
            pw = f"{where}.phases[{k}]"
            if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
                raise ManifestError(f"{pw}: expected an object with a name")
            if p["name"] in names:
                raise ManifestError(f"{pw}: phase {p['name']!r} appears twice")
            names.add(p["name"])
            start, end = _number(p.get("start"), f"{pw}.start"), _number(p.get("end"), f"{pw}.end")
            if end <= start:
                raise ManifestError(f"{pw}: end {end} is not after start {start}")
            rtt = p.get("rtt_ms")
            if rtt is not None and (not isinstance(rtt, list) or len(rtt) > MAX_RTT_SAMPLES):
                raise ManifestError(f"{pw}.rtt_ms: expected a list of at most {MAX_RTT_SAMPLES} numbers")
            for i, v in enumerate(rtt or []):
                _number(v, f"{pw}.rtt_ms[{i}]", 0)
            if p.get("app_bytes") is not None:
                _number(p["app_bytes"], f"{pw}.app_bytes", 0)
            phases.append(Phase(p["name"], round(start * NS), round(end * NS), p))
        pcap_path = Path(pcap) if Path(pcap).is_absolute() else base / pcap
        runs.append(Run(number, label, policy, params, bool(raw.get("default", False)),
                        bool(raw.get("plot", False)), pcap_path, port, phases, raw))
    return {"cell_size": cell_size, "window_seconds": window}, runs


# ---------------------------------------------------------------------------------------------
# Analysis of one run

PAIRS = (("idle", "chat"), ("idle", "bulk"))


def plot_series(index: Index, start_ns: int, end_ns: int, bin_s: float = PLOT_BIN_SECONDS) -> dict:
    """Payload segments per bin, up and down, over [start, end)."""
    span = max(1, end_ns - start_ns)
    bin_ns = max(round(bin_s * NS), -(-span // MAX_BINS))
    bins = -(-span // bin_ns)
    series = {"bin_seconds": bin_ns / NS, "start_ns": start_ns}
    for name, _ in DIRECTIONS:
        counts = [0] * bins
        times = index.directions[name].pay_times
        for k in range(bisect.bisect_left(times, start_ns), bisect.bisect_left(times, end_ns)):
            counts[(times[k] - start_ns) // bin_ns] += 1
        series[name] = counts
    return series


def analyze_run(run: Run, settings: dict, folds: int, repeats: int, seed: int,
                permutations: int = PERMUTATIONS_DEFAULT) -> dict:
    capture = read_pcap(run.pcap, run.tunnel_port)
    cell_size, window_ns = settings["cell_size"], round(settings["window_seconds"] * NS)
    index = Index(capture, cell_size)
    phases = {p.name: p for p in run.phases}
    result: dict = {
        "label": run.label, "policy": run.policy, "params": run.params, "default": run.default,
        "plot": run.plot, "pcap": str(run.pcap), "tunnel_port": run.tunnel_port,
        "capture": {"records": capture.records, "tunnel_segments": len(capture),
                    "skipped": capture.skipped_total, "skipped_by_reason": dict(sorted(capture.skipped.items())),
                    "link_type": capture.link_type, "nanosecond": capture.nanosecond,
                    "connections": capture.connections},
        "phases": {}, "windows": {}, "auc": {}, "overhead": {}, "notes": [],
    }
    times = capture.time_ns
    inside = sum(bisect.bisect_left(times, p.end_ns) - bisect.bisect_left(times, p.start_ns) for p in run.phases)
    result["capture"]["segments_outside_phases"] = len(capture) - inside
    if len(capture) == 0:
        result["notes"].append("no TCP segment on the tunnel port in the capture")
    elif inside == 0:
        result["notes"].append("no tunnel segment falls inside a phase: do the pcap and the manifest use one clock?")
    features: dict[str, list[list[float]]] = {}
    for p in run.phases:
        seconds = (p.end_ns - p.start_ns) / NS
        traffic = phase_traffic(index, p.start_ns, p.end_ns)
        windows = phase_windows(p.start_ns, p.end_ns, window_ns)
        features[p.name] = [window_features(index, a, b) for a, b in windows]
        result["windows"][p.name] = len(windows)
        result["phases"][p.name] = {"start": p.start_ns / NS, "end": p.end_ns / NS, "seconds": seconds,
                                    "traffic": traffic,
                                    **{k: p.raw[k] for k in ("app_bytes", "messages", "lost") if k in p.raw}}
        result["overhead"][p.name] = overhead(traffic, p.raw.get("app_bytes"), seconds)
    for negative, positive in PAIRS:
        key = f"{negative}_vs_{positive}"
        if negative not in features or positive not in features:
            result["auc"][key] = {"observer_auc": None, "reason": f"no {negative} or {positive} phase in the manifest"}
            continue
        outcome = classify(features[negative], features[positive], folds=folds, repeats=repeats, seed=seed,
                           permutations=permutations)
        outcome["windows"] = {negative: len(features[negative]), positive: len(features[positive])}
        result["auc"][key] = outcome
    bulk = phases.get("bulk")
    goodput = None
    if bulk is not None and isinstance(bulk.raw.get("app_bytes"), (int, float)):
        goodput = bulk.raw["app_bytes"] / ((bulk.end_ns - bulk.start_ns) / NS)
    result["goodput_bulk_bytes_per_s"] = goodput
    chat = phases.get("chat")
    rtt = chat.raw.get("rtt_ms") if chat is not None else None
    result["latency"] = {"chat_rtt_samples": len(rtt or []), "chat_rtt_p50_ms": percentile(rtt or [], 50),
                         "chat_rtt_p99_ms": percentile(rtt or [], 99), "added_p50_ms": None,
                         "added_p99_ms": None, "baseline": None, "shaper_added": {}}
    shaper = run.raw.get("shaper")
    if isinstance(shaper, dict):
        result["shaper"] = shaper
        for side, values in shaper.items():
            if isinstance(values, dict) and ("addedLatencyP50Ms" in values or "addedLatencyP99Ms" in values):
                result["latency"]["shaper_added"][side] = {"p50_ms": values.get("addedLatencyP50Ms"),
                                                           "p99_ms": values.get("addedLatencyP99Ms")}
    if capture.skipped_total:
        result["notes"].append(f"{capture.skipped_total} records skipped ({', '.join(f'{k} {v}' for k, v in sorted(capture.skipped.items()))})")
    for key, value in result["auc"].items():
        if value.get("reason"):
            result["notes"].append(f"AUC {key.replace('_vs_', '/')}: {value['reason']}")
    result["_series"] = plot_series(index, min(p.start_ns for p in run.phases), max(p.end_ns for p in run.phases)) \
        if run.plot else None
    return result


def add_baseline_latency(results: list[dict]) -> None:
    offs = [r for r in results if r["policy"] == "off"]
    if not offs:
        return
    baseline = next((r for r in offs if r["default"]), offs[0])
    for r in results:
        lat, base = r["latency"], baseline["latency"]
        lat["baseline"] = baseline["label"]
        lat["added_p50_ms"] = _difference(lat["chat_rtt_p50_ms"], base["chat_rtt_p50_ms"])
        lat["added_p99_ms"] = _difference(lat["chat_rtt_p99_ms"], base["chat_rtt_p99_ms"])


def _criterion(name: str, value, limit: float, at_most: bool) -> dict:
    met = None if value is None else (value <= limit if at_most else value >= limit)
    return {"name": name, "value": value, "limit": limit, "comparison": "<=" if at_most else ">=", "met": met}


def _overall(criteria: list[dict]):
    if any(c["met"] is False for c in criteria):
        return False
    return None if any(c["met"] is None for c in criteria) else True


def evaluate_targets(results: list[dict]) -> list[dict]:
    targets = []
    for r in results:
        auc_chat = r["auc"].get("idle_vs_chat", {}).get("observer_auc")
        if r["policy"] == "off":
            criteria = [_criterion("AUC idle/chat", auc_chat, TARGET_OFF_AUC_MIN, at_most=False)]
        elif r["policy"] == "constant" and r["default"]:
            chat = r["overhead"].get("chat", {})
            criteria = [_criterion("AUC idle/chat", auc_chat, TARGET_CONSTANT_AUC_MAX, at_most=True),
                        _criterion("overhead chat (wire)", chat.get("wire_per_app"), TARGET_CONSTANT_OVERHEAD_MAX, at_most=True),
                        _criterion("added p50 ms (RTT vs off)", r["latency"]["added_p50_ms"],
                                   TARGET_CONSTANT_ADDED_P50_MAX_MS, at_most=True)]
        else:
            continue
        target = {"label": r["label"], "policy": r["policy"], "criteria": criteria, "met": _overall(criteria)}
        r["targets"] = target
        targets.append(target)
    return targets


# ---------------------------------------------------------------------------------------------
# 6. Outputs: markdown

def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _auc_cell(outcome: dict) -> str:
    chance = outcome.get("chance_observer_auc")
    value = _fmt(outcome.get("observer_auc"))
    return value if not chance or outcome.get("observer_auc") is None else f"{value} ({chance['mean']:.2f})"


def _verdict(met) -> str:
    return {True: "met", False: "not met", None: "unknown"}[met]


def sweep_key(result: dict):
    def value_key(v):
        return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))
    policy = result["policy"] or ""
    return (POLICY_ORDER.get(policy, len(POLICY_ORDER)), policy,
            tuple((k, value_key(v)) for k, v in sorted(result["params"].items())), result["label"])


def render_markdown(results: list[dict], targets: list[dict], settings: dict, method: dict, sweep: bool) -> str:
    rows = sorted(results, key=sweep_key) if sweep else results
    lines = ["# Shaping: traffic-analysis resistance (issue 5)", "",
             f"Cell size {settings['cell_size']} B, windows of {settings['window_seconds']} s (first window of "
             f"each phase dropped), stratified {method['folds']}-fold CV x {method['repeats']} repeats "
             f"(seed {method['seed']}). AUC = the observer's: logistic regression on all "
             f"features, cross-validated; in parentheses its chance level, the same observer on the same "
             f"windows with the labels shuffled ({method['permutations']} permutations). Overhead = wire bytes (IP, both directions) / application bytes. "
             f"Added latency = chat RTT minus the `off` run's.", "",
             "| setting | AUC idle/chat | AUC idle/bulk | overhead chat (wire) | idle wire kB/s | chat p50/p99 ms "
             "| added p50/p99 ms | bulk goodput kB/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lat = r["latency"]
        idle = r["overhead"].get("idle", {})
        chat = r["overhead"].get("chat", {})
        idle_rate = idle.get("wire_bytes_per_s")
        goodput = r["goodput_bulk_bytes_per_s"]
        name = r["label"] + (" (default)" if r["default"] else "")
        lines.append("| " + " | ".join([
            _md(name),
            _auc_cell(r["auc"]["idle_vs_chat"]),
            _auc_cell(r["auc"]["idle_vs_bulk"]),
            _fmt(chat.get("wire_per_app"), 1, "x"),
            _fmt(None if idle_rate is None else idle_rate / 1000, 2),
            f"{_fmt(lat['chat_rtt_p50_ms'], 0)} / {_fmt(lat['chat_rtt_p99_ms'], 0)}",
            f"{_fmt(lat['added_p50_ms'], 0)} / {_fmt(lat['added_p99_ms'], 0)}",
            _fmt(None if goodput is None else goodput / 1000, 1),
        ]) + " |")
    lines.append("")
    if targets:
        summary = "; ".join(f"{_md(t['label'])}: {_verdict(t['met'])}" for t in targets)
        lines.append(f"**Targets** (`off` AUC idle/chat >= {TARGET_OFF_AUC_MIN}; default `constant` AUC idle/chat "
                     f"<= {TARGET_CONSTANT_AUC_MAX}, overhead chat <= {TARGET_CONSTANT_OVERHEAD_MAX:g}x, added p50 <= "
                     f"{TARGET_CONSTANT_ADDED_P50_MAX_MS:g} ms): {summary}.")
        lines.append("")
        for t, r in ((t, next(r for r in results if r.get("targets") is t)) for t in targets):
            parts = [f"{c['name']} {_fmt(c['value'])} {c['comparison']} {c['limit']:g}: {_verdict(c['met'])}"
                     for c in t["criteria"]]
            extra = []
            cells = r["overhead"].get("chat", {}).get("cells_per_app")
            chance = r["auc"].get("idle_vs_chat", {}).get("chance_observer_auc")
            if chance:
                extra.append(f"AUC chance level {chance['mean']:.2f}")
            single = r["auc"].get("idle_vs_chat", {}).get("best_single_feature")
            if single:
                extra.append(f"best single feature {single['name']} {single['auc']:.2f} (chosen after the fact)")
            if t["policy"] == "constant" and cells is not None:
                extra.append(f"cell bytes only {cells:.1f}x")
            for side, v in r["latency"]["shaper_added"].items():
                extra.append(f"shaper {side} added p50/p99 {_fmt(v.get('p50_ms'), 0)}/{_fmt(v.get('p99_ms'), 0)} ms")
            lines.append(f"- {_md(t['label'])} (`{t['policy']}`): " + "; ".join(parts) +
                         (f" ({'; '.join(extra)})" if extra else "") + f". Overall: {_verdict(t['met'])}.")
    else:
        lines.append("**Targets**: no `off` run and no default `constant` run in this manifest.")
    notes = [(r["label"], n) for r in rows for n in r["notes"]]
    windows = [f"{_md(r['label'])}: " + ", ".join(f"{k} {v}" for k, v in r["windows"].items()) for r in rows]
    lines += ["", "Windows per phase: " + "; ".join(windows) + "."]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {_md(label)}: {_md(note)}" for label, note in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# 6. Outputs: SVG, drawn by hand

PHASE_FILL = {"idle": "#e6e6e6", "chat": "#d6e6f5", "bulk": "#fbe0c6"}
OTHER_FILL = "#e3f1e0"
UP_COLOUR, DOWN_COLOUR = "#1f5fa8", "#c0392b"
PANEL_WIDTH, PANEL_HEIGHT = 960, 330
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 48, 50
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text) -> str:
    text = _XML_BAD.sub("?", str(text))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&apos;")


def nice_step(span: float, target: int = 8) -> float:
    """A 1, 2 or 5 x 10^k step giving about `target` ticks over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, target)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _tick_label(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


def plot_peak(result: dict) -> int:
    """The largest bin before the bulk phase: the y scale, so that a bulk transfer (clipped)
    does not flatten the idle and chat traffic the plot is about."""
    series = result["_series"]
    t0, bin_s = series["start_ns"] / NS, series["bin_seconds"]
    bulk = result["phases"].get("bulk")
    limit = len(series["up"]) if bulk is None else max(0, int((bulk["start"] - t0) / bin_s))
    return max(max(series["up"][:limit], default=0), max(series["down"][:limit], default=0), 1)


def svg_panel(result: dict, y_offset: float, x_span_s: float | None = None, peak: int | None = None) -> list[str]:
    series = result["_series"]
    up, down, bin_s = series["up"], series["down"], series["bin_seconds"]
    t0 = series["start_ns"] / NS
    span = x_span_s or max(len(up) * bin_s, bin_s)
    left, top = MARGIN_LEFT, y_offset + MARGIN_TOP
    width = PANEL_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    height = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    zero = top + height / 2
    peak = peak or plot_peak(result)
    y_step = nice_step(peak, 3)
    y_max = y_step * math.ceil(peak / y_step)
    clipped = max(max(up, default=0), max(down, default=0)) > y_max

    def x(t: float) -> float:
        return left + width * min(max(t / span, 0.0), 1.0)

    def y(count: float) -> float:
        return zero - (height / 2) * max(-1.0, min(1.0, count / y_max))

    out = ['<g class="panel">',
           f'<text x="{PANEL_WIDTH / 2:.1f}" y="{y_offset + 22:.1f}" text-anchor="middle" font-size="16" '
           f'font-weight="bold">{xml_text(result["label"])}</text>']
    for name, phase in result["phases"].items():
        a, b = x(phase["start"] - t0), x(phase["end"] - t0)
        out.append(f'<rect x="{a:.1f}" y="{top:.1f}" width="{max(b - a, 0):.1f}" height="{height:.1f}" '
                   f'fill="{PHASE_FILL.get(name, OTHER_FILL)}"/>')
        out.append(f'<text x="{(a + b) / 2:.1f}" y="{top + 14:.1f}" text-anchor="middle" font-size="12" '
                   f'fill="#444">{xml_text(name)}</text>')
    out.append(f'<rect x="{left}" y="{top:.1f}" width="{width}" height="{height:.1f}" fill="none" stroke="#333"/>')
    x_step = nice_step(span, 10)
    for k in range(0, int(span / x_step) + 1):
        t = k * x_step
        out.append(f'<line x1="{x(t):.1f}" y1="{top + height:.1f}" x2="{x(t):.1f}" y2="{top + height + 5:.1f}" stroke="#333"/>')
        out.append(f'<text x="{x(t):.1f}" y="{top + height + 18:.1f}" text-anchor="middle" font-size="11">{_tick_label(t)}</text>')
    for k in range(-round(y_max / y_step), round(y_max / y_step) + 1):
        v = k * y_step
        out.append(f'<line x1="{left - 5}" y1="{y(v):.1f}" x2="{left}" y2="{y(v):.1f}" stroke="#333"/>')
        out.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{_tick_label(abs(v))}</text>')
    out.append(f'<line x1="{left}" y1="{zero:.1f}" x2="{left + width}" y2="{zero:.1f}" stroke="#888" stroke-dasharray="3,3"/>')
    for counts, sign, colour in ((up, 1, UP_COLOUR), (down, -1, DOWN_COLOUR)):
        points = " ".join(f"{x((i + 0.5) * bin_s):.1f},{y(sign * c):.1f}" for i, c in enumerate(counts))
        if points:
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.2"/>')
    out.append(f'<text x="{left + width / 2:.1f}" y="{top + height + 36:.1f}" text-anchor="middle" font-size="12">'
               f'time since the first phase start (s)</text>')
    out.append(f'<text x="16" y="{zero:.1f}" text-anchor="middle" font-size="12" transform="rotate(-90 16 {zero:.1f})">'
               f'segments with payload per {_tick_label(bin_s * 1000)} ms</text>')
    out.append(f'<text x="{left + width - 4}" y="{top + 30:.1f}" text-anchor="end" font-size="12" fill="{UP_COLOUR}">'
               f'up (entry → exit), above the axis</text>')
    if clipped:
        out.append(f'<text x="{left + 4}" y="{top + height + 47:.1f}" font-size="10" fill="#444">'
                   f'(scaled to the idle and chat traffic: bins above {_tick_label(y_max)} are clipped)</text>')
    out.append(f'<text x="{left + width - 4}" y="{top + height - 8:.1f}" text-anchor="end" font-size="12" '
               f'fill="{DOWN_COLOUR}">down (exit → entry), below the axis</text>')
    out.append("</g>")
    return out


def render_svg(results: list[dict]) -> str:
    span = max(len(r["_series"]["up"]) * r["_series"]["bin_seconds"] for r in results)
    height = PANEL_HEIGHT * len(results)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{PANEL_WIDTH}" height="{height}" '
           f'viewBox="0 0 {PANEL_WIDTH} {height}" font-family="sans-serif">',
           f'<rect width="{PANEL_WIDTH}" height="{height}" fill="white"/>']
    peak = max(plot_peak(r) for r in results)     # one scale for every panel: comparable
    for i, r in enumerate(results):
        out += svg_panel(r, i * PANEL_HEIGHT, span, peak)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def slugify(label: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60] or "run"
    slug, n = base, 2
    while slug in taken and n < MAX_RUNS + 2:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


# ---------------------------------------------------------------------------------------------
# Driver

def analyze(manifest_path: Path, out: Path, sweep: bool = False, folds: int = FOLDS_DEFAULT,
            repeats: int = REPEATS_DEFAULT, seed: int = SEED_DEFAULT,
            permutations: int = PERMUTATIONS_DEFAULT) -> dict:
    settings, runs = load_manifest(manifest_path)
    results = [analyze_run(run, settings, folds, repeats, seed, permutations) for run in runs]
    add_baseline_latency(results)
    targets = evaluate_targets(results)
    method = {"folds": folds, "repeats": repeats, "seed": seed, "permutations": permutations,
              "guard_windows": GUARD_WINDOWS,
              "min_windows_per_class": MIN_WINDOWS_PER_CLASS, "max_windows_per_class": MAX_CV_WINDOWS,
              "logistic": {"l2": LOGISTIC_L2, "max_iterations": LOGISTIC_ITERATIONS, "tolerance": LOGISTIC_TOLERANCE},
              "features": list(FEATURES), "auc": "Mann-Whitney, ties counted half",
              "observer_auc": "mean CV AUC of logistic regression on all features (fixed in advance)",
              "best_single_feature": "the single feature with the highest mean CV AUC (chosen after the fact: optimistic)",
              "chance_observer_auc": "observer_auc with the two classes' labels shuffled (same sizes)",
              "rtt_percentiles": "linear interpolation between order statistics"}
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    plotted = []
    for r in results:
        r["slug"] = slugify(r["label"], taken)
        if r["_series"] is not None:
            name = f"traffic-{r['slug']}.svg"
            (out / name).write_text(render_svg([r]), encoding="utf-8")
            r["svg"] = name
            plotted.append(r)
    if len(plotted) >= 2:
        (out / "traffic-off-vs-constant.svg").write_text(render_svg(plotted), encoding="utf-8")
    for r in results:
        del r["_series"]
    document = {"tool": "Benchmarks/shaping/analyze.py", "format": 1, "manifest": str(manifest_path),
                **settings, "method": method, "targets": targets,
                "runs": sorted(results, key=sweep_key) if sweep else results}
    (out / "results.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(render_markdown(results, targets, settings, method, sweep), encoding="utf-8")
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Traffic-analysis resistance of the shaping policies, "
                                                 "from the pcaps and the manifest of measure.sh.")
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and SVGs")
    parser.add_argument("--sweep", action="store_true", help="sort the table by policy, then parameters")
    parser.add_argument("--folds", type=int, default=FOLDS_DEFAULT)
    parser.add_argument("--repeats", type=int, default=REPEATS_DEFAULT)
    parser.add_argument("--seed", type=int, default=SEED_DEFAULT)
    parser.add_argument("--permutations", type=int, default=PERMUTATIONS_DEFAULT,
                        help="label-shuffled repetitions giving the observer AUC's chance level (0: none)")
    args = parser.parse_args(argv)
    if not 2 <= args.folds <= MAX_FOLDS or not 1 <= args.repeats <= MAX_REPEATS or \
            not 0 <= args.permutations <= MAX_PERMUTATIONS:
        parser.error(f"--folds must be 2..{MAX_FOLDS}, --repeats 1..{MAX_REPEATS}, "
                     f"--permutations 0..{MAX_PERMUTATIONS}")
    try:
        document = analyze(args.manifest, args.out, args.sweep, args.folds, args.repeats, args.seed,
                           args.permutations)
    except (PcapError, ManifestError) as error:
        print(f"analyze.py: error: {error}", file=sys.stderr)
        return 2
    for target in document["targets"]:
        print(f"{target['label']}: targets {_verdict(target['met'])}")
    print(f"wrote {args.out / 'results.md'} and results.json ({len(document['runs'])} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
