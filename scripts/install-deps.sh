#!/usr/bin/env bash
# Installs what building and testing Sotto needs, and only what is missing:
#   - Debian packages (apt-get): libcoap3 (headers, and the coap-client/coap-server binaries the
#     end-to-end tests talk to), pkg-config, curl, python3 with venv, and tor (the gateway drives
#     it; the tests run it as a private network on 127.0.0.1). Debian's tor package would start
#     the system tor service, which joins the PUBLIC Tor network: while apt-get runs, a
#     policy-rc.d that answers 101 keeps invoke-rc.d from starting any service (one that exists
#     already is left alone);
#   - Python packages from requirements-test.txt into a virtual environment at .venv
#     (or $SOTTO_VENV).
# Swift itself is not installed here: it must already be on PATH (or in /opt/swift/usr/bin).
#
# Usage: scripts/install-deps.sh [EXTRA_DEBIAN_PACKAGE...]
#   Extra names are installed too when missing (e.g. `tor`, `i2pd` for integration tests).
# Safe to run again: a second run with nothing missing changes nothing and takes a second.
# Works as root (CI) or with password-less sudo; never reads standard input.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SOTTO_VENV:-$ROOT/.venv}"
REQUIREMENTS="$ROOT/requirements-test.txt"

say() { printf 'install-deps: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

APT_PACKAGES=(pkg-config libcoap3-dev libcoap3-bin libsqlite3-dev curl python3 python3-venv tor autoconf automake libtool "$@")

# --- Debian packages ---------------------------------------------------------------------------
is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "apt-get not found; install these by hand: ${missing[*]}"
    if [[ "$(id -u)" == 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        die "need root (or password-less sudo) to install: ${missing[*]}"
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# scripts/install-deps.sh: start no service while installing\nexit 101\n' |
            "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        made_policy=1
    fi
    rc=0
    { "${SUDO[@]}" apt-get update -qq </dev/null &&
        "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null; } || rc=$?
    [[ $made_policy == 1 ]] && "${SUDO[@]}" rm -f "$policy"
    [[ $rc == 0 ]] || die "apt-get failed (exit $rc) installing: ${missing[*]}"
    for pkg in "${missing[@]}"; do
        is_installed "$pkg" || die "apt-get did not install $pkg"
    done
fi

# --- Swift ---------------------------------------------------------------------------------------
if ! command -v swift >/dev/null && [[ ! -x /opt/swift/usr/bin/swift ]]; then
    die "swift not found on PATH nor in /opt/swift/usr/bin; install a Swift 6 toolchain first"
fi

# --- Python virtual environment ------------------------------------------------------------------
PYTHON="${SOTTO_PYTHON:-$(command -v python3 || true)}"
[[ -n "$PYTHON" ]] || die "python3 not found"

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating a Python virtual environment at $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" </dev/null || die "'$PYTHON -m venv' failed (Debian's python3 needs python3-venv)"
fi

# The stamp records which requirements the venv holds, so a changed file re-installs.
stamp="$VENV/.sotto-requirements.sha256"
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! "$VENV/bin/python" -c 'import pytest, socks, pytest_timeout, aiocoap, DTLSSocket' 2>/dev/null; then
    say "installing Python packages from requirements-test.txt into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS" </dev/null
    "$VENV/bin/python" -c 'import pytest, socks, pytest_timeout, aiocoap, DTLSSocket' || die "Python packages did not install"
    printf '%s\n' "$want" >"$stamp"
fi

say "ok"
