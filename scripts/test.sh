#!/usr/bin/env bash
# The project's test command (README, CI): installs what is missing (scripts/install-deps.sh),
# builds, runs the unit tests (`swift test`) and then the end-to-end suite with real peers
# (pytest, tests/). Exits non-zero if any step failed; a test run that ran no test fails too.
#
# Environment:
#   SOTTO_SCRATCH_PATH  build folder instead of .build (passed to every swift command)
#   PYTEST_ARGS         extra pytest arguments, e.g. "-k coap -x"
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
started=$SECONDS

if ! command -v swift >/dev/null && [[ -x /opt/swift/usr/bin/swift ]]; then
    export PATH="$PATH:/opt/swift/usr/bin"
fi

step() { printf '\n==> %s\n' "$*"; }

SWIFT_FLAGS=()
if [[ -n "${SOTTO_SCRATCH_PATH:-}" ]]; then
    SWIFT_FLAGS=(--scratch-path "$SOTTO_SCRATCH_PATH")
    export SOTTO_SCRATCH_PATH
fi

step "installing missing dependencies"
bash scripts/install-deps.sh || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

step "swift build"
swift build "${SWIFT_FLAGS[@]}" </dev/null || { echo "test.sh: swift build failed" >&2; exit 1; }

step "swift build --build-tests"
swift build --build-tests "${SWIFT_FLAGS[@]}" </dev/null || { echo "test.sh: swift build --build-tests failed" >&2; exit 1; }

step "unit tests: swift test"
swift test "${SWIFT_FLAGS[@]}" </dev/null
unit=$?

step "end-to-end tests: pytest tests"
# shellcheck disable=SC2086  # PYTEST_ARGS is split on purpose
.venv/bin/python -m pytest tests ${PYTEST_ARGS:-} </dev/null
e2e=$?
if [[ $e2e == 5 ]]; then
    echo "test.sh: pytest collected no test: that is a failure" >&2
fi

elapsed=$((SECONDS - started))
echo
echo "==> summary ($((elapsed / 60)) min $((elapsed % 60)) s)"
echo "    unit tests (swift test): $([[ $unit == 0 ]] && echo passed || echo "FAILED (exit $unit)")"
echo "    end-to-end (pytest):     $([[ $e2e == 0 ]] && echo passed || echo "FAILED (exit $e2e)")"
if [[ $unit != 0 || $e2e != 0 ]]; then
    exit 1
fi
exit 0
