"""Unit tests of Benchmarks/shaping/bound.py (the latency floor of data-independent shaping under a
wire-byte budget, docs/shaping.md): the arithmetic against closed forms and a simulation, and
its refusal of malformed options. No gateway."""

from __future__ import annotations

import importlib.util
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "Benchmarks" / "shaping" / "bound.py"
_spec = importlib.util.spec_from_file_location("shaping_bound", SCRIPT)
B = importlib.util.module_from_spec(_spec)
sys.modules["shaping_bound"] = B
_spec.loader.exec_module(B)


@pytest.mark.parametrize("a,b", [(1.0, 1.0), (0.2, 1.5), (3.0, 0.5)])
def test_uniform_sum_cdf_matches_a_simulation_and_its_median_is_the_middle(a, b):
    rng = random.Random(7)
    samples = [rng.uniform(0, a) + rng.uniform(0, b) for _ in range(40_000)]
    for w in (0.1, 0.4, (a + b) / 2, 0.9 * (a + b), a + b + 1):
        simulated = sum(s <= w for s in samples) / len(samples)
        assert abs(B.uniform_sum_cdf(w, a, b) - simulated) < 0.01, w
    assert B.uniform_sum_cdf(-1, a, b) == 0 and B.uniform_sum_cdf(a + b, a, b) == 1
    # The sum is symmetric about (a + b) / 2.
    assert B.median(lambda w: B.uniform_sum_cdf(w, a, b)) == pytest.approx((a + b) / 2, abs=1e-5)


def test_one_message_size_without_headers_gives_the_closed_form():
    # One size m, reply r, no header: the bound is min over the split of (m / Cu + r / Cd) / 2,
    # which is (sqrt(m) + sqrt(r))^2 / (2 B) at Cu / Cd = sqrt(m / r).
    m, r, budget = 600, 60, 3000.0
    share = math.sqrt(m) / (math.sqrt(m) + math.sqrt(r))
    closed = (math.sqrt(m) + math.sqrt(r)) ** 2 / (2 * budget)
    assert B.lower_bound(budget, [m], r, 0, share) == pytest.approx(closed, rel=1e-4)
    found, _ = B.best(B.lower_bound, shares=[s / 1000 for s in range(500, 1000)], budget=budget, sizes=[m], reply=r, header=0)
    assert found == pytest.approx(closed, rel=1e-3)
    # An evenly spaced schedule whose segment fits the message exactly reaches the bound.
    assert B.even_schedule(budget, [m], r, 0, share, payload=m) == pytest.approx(closed, rel=1e-4)


def test_headers_raise_the_bound_and_the_even_schedule_never_beats_it():
    sizes = B.messages(50, 1000, 40)
    budget = 5 * 1050.0
    previous = 0.0
    for header in (0, 16, 68):
        low, _ = B.best(B.lower_bound, budget=budget, sizes=sizes, reply=33, header=header)
        assert low > previous
        previous = low
        for payload in (200, 520, 1040):
            for share in (0.6, 0.77, 0.9):
                assert B.even_schedule(budget, sizes, 33, header, share, payload) >= low - 0.002


def test_a_message_in_two_segments_waits_one_period_more():
    # Sizes all in (P, 2P]: wait U[0, T] + T upwards, U[0, T'] downwards; p50 = T + (T + T') / 2.
    budget, payload, reply, share = 2000.0, 100, 50, 0.5
    t_up, t_down = payload / (budget * share), reply / (budget * (1 - share))
    got = B.even_schedule(budget, [150, 180, 200], reply, 0, share, payload)
    assert got == pytest.approx(t_up + (t_up + t_down) / 2, rel=1e-4)


def test_explicit_segment_sizes_default_to_payload_plus_header():
    sizes = B.messages(50, 1000, 40)
    plain = B.even_schedule(5000.0, sizes, 33, 52, 0.7, 500)
    assert B.even_schedule(5000.0, sizes, 33, 52, 0.7, 500, up_segment=552, down_segment=85) == pytest.approx(plain)
    # Larger segments for the same payload can only cost latency.
    assert B.even_schedule(5000.0, sizes, 33, 52, 0.7, 500, up_segment=1100, down_segment=566) > plain


def test_the_table_prints_for_defaults():
    out = subprocess.run([sys.executable, str(SCRIPT), "--headers", "68"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "budget 5x = 5,250 wire bytes/s" in out.stdout
    row = [line for line in out.stdout.splitlines() if line.startswith("| 68 |")]
    assert len(row) == 1 and row[0].count("ms") == 2
    assert re.search(r"fixed 514-byte cells both ways \(484 payload bytes each.*: \d+ ms", out.stdout)
    out = subprocess.run([sys.executable, str(SCRIPT), "--headers", "0", "--cell", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "fixed" not in out.stdout


@pytest.mark.parametrize("arguments,message", [
    (["--headers", "0,x"], "--headers takes integers"),
    (["--headers", ""], "--headers takes integers"),
    (["--min", "900", "--max", "100"], "--min and --max"),
    (["--rate", "0"], "--rate"),
    (["--factor", "-1"], "--factor"),
    (["--reply", "0"], "--reply"),
    (["--headers", "5000"], "--headers must"),
    (["--framing", "abc"], "invalid int value"),
    (["--cell", "100"], "--cell must"),
])
def test_malformed_options_exit_2_with_a_message(arguments, message):
    out = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, (out.returncode, out.stderr)
    assert out.stdout == ""
