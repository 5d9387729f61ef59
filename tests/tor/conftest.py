"""The private-Tor-network tests start eight tor processes and take about half a minute, so they
are not part of the default run yet: they are collected only with SOTTO_TOR_TESTS=1
(`SOTTO_TOR_TESTS=1 .venv/bin/python -m pytest tests/tor`)."""

import os

import tornet

if os.environ.get("SOTTO_TOR_TESTS") != "1":
    collect_ignore_glob = ["*.py"]


def pytest_terminal_summary(terminalreporter):
    """The measurements of test_testnet.py (times, memory), after the results."""
    if not tornet.METRICS:
        return
    terminalreporter.section("private Tor network measurements")
    for name, value in tornet.METRICS.items():
        terminalreporter.write_line(f"{name}: {value}")
