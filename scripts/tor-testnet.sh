#!/usr/bin/env bash
# A private Tor network on 127.0.0.1 for integration tests: 3 directory authorities, 3 relays (one
# of them an exit that only accepts 127.0.0.0/8), a client and an onion host. It never contacts the
# public Tor network: every node lists the private authorities in explicit DirAuthority lines (so
# tor's built-in authorities and fallbacks are not used), binds 127.0.0.1 only, and exits resolve
# names through a resolv.conf that points at 127.0.0.1.
#
#   scripts/tor-testnet.sh up DIR     generate the network in DIR (once; keys are reused when DIR
#                                     exists), start it, wait until the client and the onion host
#                                     have bootstrapped, print the settings a gateway needs
#   scripts/tor-testnet.sh down DIR   stop every tor of DIR (SIGTERM, SIGKILL after a bounded wait)
#   scripts/tor-testnet.sh env DIR    print TOR_SOCKS_PORT=... and friends for `eval` in scripts
#
# Environment:
#   TOR_TESTNET_TIMEOUT   seconds `up` waits for bootstrap (default 90)
#
# Layout of DIR: nodes/<name>/{torrc,tor.pid,notice.log,keys/...}, ports.env (the ports of the
# current run), passphrase (for the authorities' identity keys, tor-gencert), empty GeoIP files.
#
# Why the options below (docs/ of this project and DESIGN.md "Facts measured on this kind of
# machine"): UseMicrodescriptors 0 (microdescriptor exit summaries drop private addresses),
# DirCache 0 on relays and TestingDirAuthVoteHSDir limited to the authorities (caches answer 404
# for a while), RefuseUnknownExits 0 (all relays share 127.0.0.1), VanguardsLiteEnabled 0 and
# UseEntryGuards 0 (paths collide with so few relays), a 10 s voting interval whose first vote
# comes about 4 s after start (TestingV3AuthVotingStartOffset, recomputed on every `up`), empty
# GeoIP files and MALLOC_ARENA_MAX=1 (memory). The client and the onion host start only when the
# first consensus is out (see cmd_up).
set -euo pipefail

AUTHS=(auth0 auth1 auth2)
RELAYS=(relay0 relay1 exit0)
CLIENT=client
ONION=onionhost
NODES=("${AUTHS[@]}" "${RELAYS[@]}" "$CLIENT" "$ONION")
TIMEOUT="${TOR_TESTNET_TIMEOUT:-90}"
# Seconds from starting the authorities to their first vote: time for the relays to start and
# upload their descriptors, so the first consensus already lists them.
FIRST_VOTE_AFTER=4
VOTING_INTERVAL=10
VOTE_DELAY=2
DIST_DELAY=2

say() { printf 'tor-testnet: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

now() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

ensure_tor() {
    if command -v tor >/dev/null && command -v tor-gencert >/dev/null; then
        return
    fi
    [[ $(id -u) == 0 ]] || die "tor is not installed and I am not root: run 'apt-get install tor' as root"
    say "installing tor (apt-get)"
    # Debian's package would start the system tor service, which joins the PUBLIC network; a
    # policy-rc.d that answers 101 keeps invoke-rc.d from starting it.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tor </dev/null >&2 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tor </dev/null >&2
    } || rc=$?
    [[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ $rc == 0 ]] || die "apt-get install tor failed ($rc)"
    command -v tor-gencert >/dev/null || die "tor installed, but tor-gencert is missing"
}

# --- processes --------------------------------------------------------------------------------

# The PIDs of running tors of DIR: from the pid files, plus any tor whose command line names a
# torrc under DIR (a tor that died before writing its pid file or lost it). Only those are ever
# signalled.
dir_pids() {
    local dir=$1 node pid
    local -A seen=()
    for node in "${NODES[@]}"; do
        pid=$(cat "$dir/nodes/$node/tor.pid" 2>/dev/null || true)
        if [[ $pid =~ ^[0-9]+$ ]] && is_our_tor "$dir" "$pid"; then
            seen[$pid]=1
        fi
    done
    local proc
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [[ -z ${seen[$pid]:-} ]] && is_our_tor "$dir" "$pid" && seen[$pid]=1
    done
    [[ ${#seen[@]} == 0 ]] || printf '%s\n' "${!seen[@]}"
}

is_our_tor() {
    local dir=$1 pid=$2 args=()
    # Builtins only: this runs for every process on every poll.
    mapfile -d '' args 2>/dev/null < "/proc/$pid/cmdline" || return 1
    [[ ${#args[@]} -ge 3 && ${args[0]##*/} == tor && ${args[1]} == -f && ${args[2]} == "$dir/nodes/"*/torrc ]]
}

stop_all() {
    local dir=$1 pids pid waited=0
    mapfile -t pids < <(dir_pids "$dir")
    [[ ${#pids[@]} == 0 ]] && { say "no tor of $dir is running"; return 0; }
    say "stopping ${#pids[@]} tor processes (SIGTERM): ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # ShutdownWaitLength 0: relays exit at once; 10 s is plenty on a busy machine.
    while ((waited < 100)); do
        mapfile -t pids < <(dir_pids "$dir")
        [[ ${#pids[@]} == 0 ]] && break
        sleep 0.1
        waited=$((waited + 1))
    done
    if [[ ${#pids[@]} -gt 0 ]]; then
        say "still running after 10 s, SIGKILL: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.5
        mapfile -t pids < <(dir_pids "$dir")
        [[ ${#pids[@]} == 0 ]] || die "could not stop: ${pids[*]}"
    fi
    local node
    for node in "${NODES[@]}"; do rm -f "$dir/nodes/$node/tor.pid"; done
    say "stopped"
}

# --- generation (once per DIR) ----------------------------------------------------------------

generate() {
    local dir=$1 node
    say "generating keys in $dir"
    mkdir -p -m 700 "$dir" "$dir/nodes"
    : > "$dir/empty-torrc"
    : > "$dir/geoip-empty"
    : > "$dir/geoip6-empty"
    # Exits resolve names here, never through the host's resolver (which may be public).
    printf 'nameserver 127.0.0.1\n' > "$dir/resolv.conf"
    [[ -s $dir/passphrase ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/passphrase"
    chmod 600 "$dir/passphrase"
    for node in "${NODES[@]}"; do
        mkdir -p -m 700 "$dir/nodes/$node" "$dir/nodes/$node/keys"
    done
    # Key generation is CPU-bound (RSA): the nodes' keys are made in parallel.
    local jobs=() names=()
    for node in "${AUTHS[@]}"; do
        local keys=$dir/nodes/$node/keys
        [[ -s $keys/authority_certificate ]] && continue
        # --passphrase-fd: non-interactive; the identity key stays encrypted on disk.
        tor-gencert --create-identity-key -m 12 \
            -i "$keys/authority_identity_key" -s "$keys/authority_signing_key" \
            -c "$keys/authority_certificate" --passphrase-fd 3 3<"$dir/passphrase" \
            >"$dir/nodes/$node/gencert.out" 2>&1 &
        jobs+=($!); names+=("tor-gencert $node")
    done
    for node in "${AUTHS[@]}" "${RELAYS[@]}"; do
        [[ -s $dir/nodes/$node/fingerprint ]] && continue
        # A relay's identity key comes into being with --list-fingerprint; the placeholder
        # DirAuthority keeps this run from even knowing the public authorities.
        tor --list-fingerprint -f "$dir/empty-torrc" --defaults-torrc "$dir/empty-torrc" \
            --DataDirectory "$dir/nodes/$node" --ORPort 127.0.0.1:1 --Nickname "$node" \
            --DirAuthority "placeholder orport=1 127.0.0.1:1 FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF" \
            --Log "err stderr" >"$dir/nodes/$node/fingerprint.out" 2>&1 &
        jobs+=($!); names+=("tor --list-fingerprint $node")
    done
    local k
    for k in "${!jobs[@]}"; do
        wait "${jobs[k]}" || die "${names[k]} failed (see $dir/nodes/*/*.out)"
    done
    for node in "${AUTHS[@]}"; do
        [[ -n $(v3ident "$dir" "$node") ]] || die "no authority certificate for $node"
    done
    for node in "${AUTHS[@]}" "${RELAYS[@]}"; do
        [[ -n $(fingerprint "$dir" "$node") ]] || die "no fingerprint file for $node"
    done
    touch "$dir/generated"
}

fingerprint() { awk '{ print $2 }' "$1/nodes/$2/fingerprint"; }
v3ident() { awk '$1 == "fingerprint" { print $2 }' "$1/nodes/$2/keys/authority_certificate"; }

# --- configuration (every `up`: fresh ports, fresh voting offset) ------------------------------

# Distinct free TCP ports on 127.0.0.1, all held open together while chosen.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

write_configs() {
    local dir=$1 offset=$2
    local -a ports
    read -r -a ports <<<"$(free_ports 14)"
    [[ ${#ports[@]} == 14 ]] || die "could not find 14 free ports"
    local -A orport dirport
    local i=0 node
    for node in "${AUTHS[@]}"; do
        orport[$node]=${ports[i]}; dirport[$node]=${ports[i + 1]}; i=$((i + 2))
    done
    for node in "${RELAYS[@]}"; do
        orport[$node]=${ports[i]}; i=$((i + 1))
    done
    local socks=${ports[i]} control=${ports[i + 1]} onion_control=${ports[i + 2]}

    local authorities="" hsdirs="" exit_fp
    for node in "${AUTHS[@]}"; do
        authorities+="DirAuthority $node orport=${orport[$node]} no-v2 v3ident=$(v3ident "$dir" "$node") 127.0.0.1:${dirport[$node]} $(fingerprint "$dir" "$node")"$'\n'
        hsdirs+="${hsdirs:+,}$(fingerprint "$dir" "$node")"
    done
    exit_fp=$(fingerprint "$dir" exit0)

    for node in "${NODES[@]}"; do
        local d=$dir/nodes/$node
        {
            cat <<EOF
# Written by scripts/tor-testnet.sh on every 'up' (ports change); keys in keys/ are kept.
TestingTorNetwork 1
DataDirectory $d
PidFile $d/tor.pid
RunAsDaemon 1
Nickname $node
ContactInfo $node@testnet.invalid
Log notice file $d/notice.log
SafeLogging 0
ShutdownWaitLength 0
Address 127.0.0.1
OutboundBindAddress 127.0.0.1
GeoIPFile $dir/geoip-empty
GeoIPv6File $dir/geoip6-empty
ClientUseIPv6 0
UseDefaultFallbackDirs 0
AssumeReachable 1
PathsNeededToBuildCircuits 0.25
V3AuthNIntervalsValid 2
TestingDirAuthVoteGuard *
TestingDirAuthVoteExit $exit_fp
TestingDirAuthVoteHSDir $hsdirs
TestingMinExitFlagThreshold 0
$authorities
EOF
            case $node in
            auth*)
                cat <<EOF
ORPort 127.0.0.1:${orport[$node]}
DirPort 127.0.0.1:${dirport[$node]}
SocksPort 0
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
ExitRelay 0
ExitPolicy reject *:*
TestingV3AuthInitialVotingInterval $VOTING_INTERVAL
TestingV3AuthInitialVoteDelay $VOTE_DELAY
TestingV3AuthInitialDistDelay $DIST_DELAY
V3AuthVotingInterval $VOTING_INTERVAL
V3AuthVoteDelay $VOTE_DELAY
V3AuthDistDelay $DIST_DELAY
TestingV3AuthVotingStartOffset $offset
EOF
                ;;
            relay*)
                cat <<EOF
ORPort 127.0.0.1:${orport[$node]}
DirCache 0
ExitRelay 0
SocksPort 0
ExitPolicy reject *:*
EOF
                ;;
            exit*)
                cat <<EOF
ORPort 127.0.0.1:${orport[$node]}
DirCache 0
ExitRelay 1
SocksPort 0
IPv6Exit 0
ExitPolicyRejectPrivate 0
ExitPolicyRejectLocalInterfaces 0
ExitPolicy accept 127.0.0.0/8:*
ExitPolicy reject *:*
RefuseUnknownExits 0
ServerDNSResolvConfFile $dir/resolv.conf
ServerDNSDetectHijacking 0
EOF
                ;;
            "$CLIENT")
                cat <<EOF
SocksPort 127.0.0.1:$socks ExtendedErrors
ControlPort 127.0.0.1:$control
CookieAuthentication 1
CookieAuthFile $d/control_auth_cookie
UseMicrodescriptors 0
UseEntryGuards 0
VanguardsLiteEnabled 0
EOF
                ;;
            "$ONION")
                cat <<EOF
ControlPort 127.0.0.1:$onion_control
SocksPort 0
CookieAuthentication 1
CookieAuthFile $d/control_auth_cookie
UseMicrodescriptors 0
UseEntryGuards 0
VanguardsLiteEnabled 0
EOF
                ;;
            esac
        } > "$d/torrc"
    done

    cat > "$dir/ports.env" <<EOF
TOR_TESTNET_DIR=$dir
TOR_SOCKS_PORT=$socks
TOR_CONTROL_PORT=$control
TOR_COOKIE=$dir/nodes/$CLIENT/control_auth_cookie
ONION_CONTROL_PORT=$onion_control
ONION_COOKIE=$dir/nodes/$ONION/control_auth_cookie
EOF
}

# Everything but the keys goes: a cached consensus or descriptor from an earlier run names old
# ports, and an authority that votes on those makes the first consensus useless.
reset_state() {
    local dir=$1 node entry
    for node in "${NODES[@]}"; do
        for entry in "$dir/nodes/$node"/* "$dir/nodes/$node"/.[!.]*; do
            [[ -e $entry ]] || continue
            case ${entry##*/} in
            keys | fingerprint | fingerprint-ed25519 | torrc) ;;
            *.log) mv -f "$entry" "$entry.prev" ;;
            *.prev) ;;
            *) rm -rf "$entry" ;;
            esac
        done
    done
}

start_node() {
    local dir=$1 node=$2
    # RunAsDaemon: the parent returns once the daemon has parsed its torrc and opened its ports,
    # so a non-zero exit here is a real start failure.
    # (No --Log here: a Log on the command line replaces the torrc's Log lines.)
    MALLOC_ARENA_MAX=1 tor -f "$dir/nodes/$node/torrc" --defaults-torrc "$dir/empty-torrc" \
        >"$dir/nodes/$node/start.out" 2>&1 </dev/null
}

start_group() {
    local dir=$1; shift
    local node pids=() failed=()
    for node in "$@"; do
        start_node "$dir" "$node" &
        pids+=($!)
    done
    local k=0
    for node in "$@"; do
        wait "${pids[k]}" || failed+=("$node")
        k=$((k + 1))
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        for node in "${failed[@]}"; do
            say "$node failed to start:"
            sed 's/^/    /' "$dir/nodes/$node/start.out" >&2
        done
        return 1
    fi
}

# "Bootstrapped 45% (requesting_descriptors): Asking for relay descriptors" -> "45 requesting_descriptors"
bootstrap_state() {
    local line
    line=$(grep -o 'Bootstrapped [0-9]*% ([a-z_]*)' "$1" 2>/dev/null | tail -n 1 || true)
    [[ -n $line ]] || { echo "0 starting"; return; }
    line=${line#Bootstrapped }
    echo "${line%%%*} $(sed 's/.*(\(.*\))/\1/' <<<"$line")"
}

show_log_tails() {
    local dir=$1 node
    for node in "${NODES[@]}"; do
        say "----- $node/notice.log (tail) -----"
        tail -n 15 "$dir/nodes/$node/notice.log" 2>/dev/null | sed 's/^/    /' >&2 || true
    done
}

cmd_up() {
    local dir=$1 started
    started=$(now)
    ensure_tor
    local pids
    mapfile -t pids < <( [[ -d $dir/nodes ]] && dir_pids "$dir" || true)
    [[ ${#pids[@]} == 0 || -z ${pids[0]} ]] || die "a network of $dir is already running (pids ${pids[*]}): run 'down $dir' first"
    if [[ -e $dir/generated ]]; then
        say "reusing the keys in $dir"
    else
        generate "$dir"
    fi
    reset_state "$dir"

    # Voting intervals start at midnight + offset + k * interval; pick the offset so the next
    # interval starts FIRST_VOTE_AFTER + vote + dist delay seconds from now, i.e. the first vote
    # comes FIRST_VOTE_AFTER seconds after the authorities start.
    local t offset
    t=$(date +%s)
    offset=$(( (t + FIRST_VOTE_AFTER + VOTE_DELAY + DIST_DELAY) % VOTING_INTERVAL ))
    write_configs "$dir" "$offset"
    say "generated configuration in $(elapsed_since "$started") s; starting 3 authorities"
    local tors_started
    tors_started=$(now)
    trap 'say "interrupted: stopping"; stop_all "$dir"; exit 130' INT TERM
    start_group "$dir" "${AUTHS[@]}" || { stop_all "$dir"; die "an authority did not start"; }
    say "starting relays ($(elapsed_since "$started") s)"
    start_group "$dir" "${RELAYS[@]}" || { stop_all "$dir"; die "a relay did not start"; }
    # The client and the onion host start once every authority serves the first consensus: a tor
    # that asks earlier gets 404s and backs off exponentially (5-7 s lost in measurements here).
    local node waiting
    while :; do
        waiting=()
        for node in "${AUTHS[@]}"; do
            [[ -s $dir/nodes/$node/cached-consensus ]] || waiting+=("$node")
        done
        [[ ${#waiting[@]} == 0 ]] && break
        if awk -v a="$started" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then
            show_log_tails "$dir"
            stop_all "$dir"
            die "no consensus from ${waiting[*]} within $TIMEOUT s; logs kept in $dir/nodes/*/notice.log"
        fi
        sleep 0.2
    done
    say "first consensus published ($(elapsed_since "$started") s); starting client and onion host"
    start_group "$dir" "$CLIENT" "$ONION" || { stop_all "$dir"; die "the client or the onion host did not start"; }

    local last="" state client_state onion_state
    while :; do
        client_state=$(bootstrap_state "$dir/nodes/$CLIENT/notice.log")
        onion_state=$(bootstrap_state "$dir/nodes/$ONION/notice.log")
        state="client ${client_state% *}% (${client_state#* }), onion host ${onion_state% *}% (${onion_state#* })"
        if [[ $state != "$last" ]]; then
            say "$(elapsed_since "$started") s: $state"
            last=$state
        fi
        if [[ ${client_state%% *} == 100 && ${onion_state%% *} == 100 ]]; then
            break
        fi
        mapfile -t pids < <(dir_pids "$dir")
        if [[ ${#pids[@]} -lt ${#NODES[@]} ]]; then
            show_log_tails "$dir"
            stop_all "$dir"
            die "a tor process exited during bootstrap (see the logs above and in $dir/nodes/*/notice.log)"
        fi
        if awk -v a="$started" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then
            show_log_tails "$dir"
            stop_all "$dir"
            die "no bootstrap within $TIMEOUT s ($state); logs kept in $dir/nodes/*/notice.log"
        fi
        sleep 0.25
    done
    trap - INT TERM
    local total bootstrap
    total=$(elapsed_since "$started")
    bootstrap=$(elapsed_since "$tors_started")
    say "bootstrapped 100% in $bootstrap s after starting the first tor ($total s for all of 'up')"
    # shellcheck disable=SC1091
    source "$dir/ports.env"
    cat <<EOF
Private Tor network up in $dir (bootstrapped in $bootstrap s; up took $total s)
  client SocksPort:        127.0.0.1:$TOR_SOCKS_PORT
  client ControlPort:      127.0.0.1:$TOR_CONTROL_PORT  (cookie $TOR_COOKIE)
  onion host ControlPort:  127.0.0.1:$ONION_CONTROL_PORT  (cookie $ONION_COOKIE)
  stop with:               $0 down $dir
EOF
}

cmd_env() {
    local dir=$1
    [[ -f $dir/ports.env ]] || die "no network in $dir (run 'up $dir' first)"
    local pids
    mapfile -t pids < <(dir_pids "$dir")
    [[ ${#pids[@]} -gt 0 && -n ${pids[0]} ]] || say "warning: no tor of $dir is running"
    cat "$dir/ports.env"
}

[[ $# == 2 ]] || usage
command=$1
dir=$2
[[ $dir == /* ]] || dir="$(pwd)/$dir"
dir=${dir%/}
case $command in
up) cmd_up "$dir" ;;
down) stop_all "$dir" ;;
env) cmd_env "$dir" ;;
*) usage ;;
esac
