"""Fixtures of the end-to-end suite: the `sotto` binary (built once per session) and a `world`
per test (a short temp folder, its processes and servers, all stopped in the finalizer)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sotto_e2e import World

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_TOOLS = ["curl", "coap-client-openssl", "coap-server-openssl"]


def _swift() -> str:
    found = shutil.which("swift") or ("/opt/swift/usr/bin/swift" if os.path.exists("/opt/swift/usr/bin/swift") else None)
    if not found:
        pytest.fail("swift not found on PATH; run scripts/install-deps.sh and put a Swift 6 toolchain on PATH",
                    pytrace=False)
    return found


@pytest.fixture(scope="session")
def sotto_bin() -> Path:
    """Builds the `sotto` product once (a no-op after scripts/test.sh built it) and returns it.
    SOTTO_BIN names a binary to use as is; SOTTO_SCRATCH_PATH a build folder other than .build."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run scripts/install-deps.sh", pytrace=False)
    if os.environ.get("SOTTO_BIN"):
        binary = Path(os.environ["SOTTO_BIN"])
        if not os.access(binary, os.X_OK):
            pytest.fail(f"SOTTO_BIN={binary} is not an executable", pytrace=False)
        return binary
    args = [_swift(), "build", "--product", "sotto"]
    if os.environ.get("SOTTO_SCRATCH_PATH"):
        args += ["--scratch-path", os.environ["SOTTO_SCRATCH_PATH"]]
    build = subprocess.run(args, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1500)
    if build.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` failed ({build.returncode}):\n{(build.stdout + build.stderr)[-8000:]}",
                    pytrace=False)
    where = subprocess.run(args + ["--show-bin-path"], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=300)
    binary = Path(where.stdout.strip().splitlines()[-1]) / "sotto"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"built, but no executable at {binary}", pytrace=False)
    return binary


@pytest.fixture
def world(sotto_bin: Path, request: pytest.FixtureRequest):
    # A short folder under /tmp: the status socket's path must fit in sun_path (108 bytes).
    folder = Path(tempfile.mkdtemp(prefix="sotto-e2e-", dir="/tmp"))
    w = World(binary=sotto_bin, dir=folder)
    yield w
    problems = w.teardown()
    failed = any(getattr(request.node, f"rep_{phase}", None) is not None and
                 getattr(request.node, f"rep_{phase}").failed for phase in ("setup", "call"))
    if os.environ.get("SOTTO_E2E_KEEP") or failed:
        print(f"\nkept the test folder {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if problems:
        logs = "\n".join(f"----- {name} -----\n{text[-6000:]}" for name, text in w.logs())
        pytest.fail("after the test: " + "; ".join(problems) + "\n" + logs, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach every process's log (gateway stderr, coap-server) to the report."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if report.failed and report.when in ("setup", "call"):
        w = item.funcargs.get("world") if hasattr(item, "funcargs") else None
        if isinstance(w, World):
            for name, text in w.logs():
                report.sections.append((f"log of {name}", text[-20000:] or "(empty)"))
