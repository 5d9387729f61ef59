"""The private-Tor-network tests: one network of eight tor processes per test run (about 15 s to
start), shared by every module here, plus a managed tor per gateway. Part of the default run
(scripts/test.sh); SOTTO_TOR_TESTS=0 leaves them out, e.g. on a machine without tor.

`testnet` is the network of the session (`sotto testnet tor up`, run by the session's `sotto`
binary: SOTTO_BIN, or the one tests/conftest.py builds), shared by every module here."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

import tornet

if os.environ.get("SOTTO_TOR_TESTS") == "0":
    collect_ignore_glob = ["*.py"]

METRICS = tornet.METRICS


@pytest.fixture(scope="session")
def testnet(request: pytest.FixtureRequest, sotto_bin: Path):
    """The network, up once for the session and down at its end; the whole cycle is timed.
    SOTTO_TOR_TESTNET_DIR names a folder to (re)use; otherwise a fresh one under /tmp, so the cycle
    includes key generation."""
    given = os.environ.get("SOTTO_TOR_TESTNET_DIR")
    folder = Path(given).resolve() if given else Path(tempfile.mkdtemp(prefix="sotto-tornet-", dir="/tmp"))
    started = time.monotonic()
    try:
        net = tornet.up(folder, sotto_bin)
    except Exception as error:  # `up` stops what it started; make sure of it
        try:
            tornet.down(folder, sotto_bin)
        except Exception:
            pass
        pytest.fail(f"the private Tor network did not come up (folder {folder}):\n{error}", pytrace=False)
    METRICS["bootstrap (first tor started -> client and onion host at 100%)"] = f"{net.bootstrap_seconds:.1f} s"
    METRICS["sotto testnet tor up (incl. key generation if new)"] = f"{net.up_seconds:.1f} s"
    yield net
    down_started = time.monotonic()
    down_output = tornet.down(folder, sotto_bin)
    down_seconds = time.monotonic() - down_started
    left = tornet.tor_pids(folder)
    METRICS["sotto testnet tor down"] = f"{down_seconds:.1f} s"
    METRICS["whole cycle (up, tests, down)"] = f"{time.monotonic() - started:.1f} s"
    if left:
        pytest.fail(f"tor processes left after 'down': {left}\n{down_output}", pytrace=False)
    if not given and request.session.testsfailed == 0 and not os.environ.get("SOTTO_E2E_KEEP"):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        METRICS["network folder (kept)"] = str(folder)


def pytest_terminal_summary(terminalreporter):
    """The measurements of the tests here (times, memory), after the results."""
    if not tornet.METRICS:
        return
    terminalreporter.section("private Tor network measurements")
    for name, value in tornet.METRICS.items():
        terminalreporter.write_line(f"{name}: {value}")
