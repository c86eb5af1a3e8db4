#!/usr/bin/env bash
# Provision a machine for crabmigrate: a working CRIU >= 4.2 that can dump sockets, the
# distribution tools the tests use, and a pipe size limit large enough for lazy (post-copy)
# migration. Idempotent: a second run on a provisioned machine needs no network.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo scripts/setup.sh [--quiet] [--help]

Provisions this machine (Debian/Ubuntu, run as root) for crabmigrate:
  - CRIU >= 4.2 that passes `criu check` and dumps a process holding TCP and UDP sockets:
    the one on PATH if it does, otherwise the first Debian suite (trixie, trixie-backports,
    forky, sid: newest stable first) whose criu does, unpacked with the libraries apt
    resolves for it into a private prefix and run through the prefix's own loader (the
    system C library is not touched)
  - iptables iproute2 busybox-static util-linux procps runc containernetworking-plugins,
    libseccomp-dev (crabmigrate links libseccomp for the spec's seccomp filters), and the
    engines the tests drive crabmigrate from: podman conmon containerd (only those missing)
  - fs.pipe-max-size >= 4194304 (persisted in /etc/sysctl.d/60-crabmigrate.conf)
The last line printed is the CRIU binary crabmigrate will use.

  --quiet   print only that last line (and errors)

Environment:
  CRABMIGRATE_PREFIX          private CRIU prefix (default /opt/crabmigrate/criu)
  CRABMIGRATE_DEBIAN_MIRROR   Debian mirror (default http://deb.debian.org/debian)
  CRABMIGRATE_CRIU_SUITES     suites to try, in order (default "trixie trixie-backports
                              forky sid")
  CRABMIGRATE_CRIU_ON_PATH=1  also link /usr/local/sbin/criu to the private CRIU
                              (runc looks for `criu` on PATH)
EOF
}

QUIET=0
for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        -q|--quiet) QUIET=1 ;;
        *) echo "setup: error: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

PREFIX=$(realpath -m -- "${CRABMIGRATE_PREFIX:-/opt/crabmigrate/criu}")
MIRROR=${CRABMIGRATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PIPE_MIN=4194304            # CRIU's lazy-pages dump asks for a ~3.3 MB pipe (3354624)
LIBDIRS="$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/lib/x86_64-linux-gnu"
LOADER="$PREFIX/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
STAMP="$PREFIX/.crabmigrate-complete"
MARKER=.crabmigrate-prefix  # marks a directory this script may replace wholesale
CRIU_MIN=4.2               # 4.1 cannot dump inet sockets on Linux >= 6.16 (SO_PASSCRED)
read -r -a SUITES <<<"${CRABMIGRATE_CRIU_SUITES:-trixie trixie-backports forky sid}"
DISTRO_PKGS=(iptables iproute2 busybox-static util-linux procps runc containernetworking-plugins
    libseccomp-dev podman conmon containerd)
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"   # sudo/su may drop the sbin dirs
LOG=""; WORK=""; CRIU=""; CRIU_VERSION=""; WHY=""; WON=""; APT_UPDATED=0

say() { [[ $QUIET == 1 ]] || echo "$*"; }
die() {  # one line; keeps the log (if anything was logged) and names it
    local msg="setup: error: $*"
    if [[ -n $LOG && -s $LOG ]]; then msg+=" (log: $LOG)"; elif [[ -n $LOG ]]; then rm -f -- "$LOG"; fi
    echo "$msg" >&2; exit 1
}
logged() { "$@" >>"$LOG" 2>&1; }
cleanup() { [[ -z $WORK ]] || rm -rf -- "$WORK"; }
trap cleanup EXIT

# at_least VERSION MIN: true if the dotted VERSION (4.2.1, 4.2.1-1) is MIN or newer.
at_least() {
    [[ $(printf '%s\n%s\n' "$2" "${1%%-*}" | sort -V | head -n1) == "$2" ]]
}

# criu_version BIN: true if BIN runs and is CRIU >= $CRIU_MIN. Sets CRIU_VERSION, WHY.
criu_version() {
    [[ -x $1 ]] || { WHY="$1 missing"; return 1; }
    CRIU_VERSION=$("$1" --version 2>/dev/null | sed -n 's/^Version: *//p' || true)
    [[ -n $CRIU_VERSION ]] || { WHY="'$1 --version' failed"; return 1; }
    at_least "$CRIU_VERSION" "$CRIU_MIN" && return 0
    WHY="version $CRIU_VERSION, need >= $CRIU_MIN (older ones cannot dump TCP/UDP sockets on Linux >= 6.16)"
    return 1
}

# criu_check BIN: true if `BIN check` says "Looks good.". Sets WHY.
criu_check() {
    local out
    out=$("$1" check 2>&1 || true)
    [[ -z $LOG ]] || printf '%s check:\n%s\n' "$1" "$out" >>"$LOG"
    grep -q 'Looks good\.' <<<"$out" && return 0
    # the RLIMIT_NOFILE complaint is printed on every run and means nothing here
    WHY="criu check: $(grep -v -e RLIMIT_NOFILE -e '^$' <<<"$out" | tail -n1)"; return 1
}

# socket_probe BIN: true if BIN dumps (with --tcp-established) a throwaway tree holding a
# TCP listener, an established loopback connection (both ends) and a UDP socket. Everything
# runs in a private network namespace that vanishes afterwards, taking CRIU's network lock
# rules with it; the images go to a temporary directory. Sets WHY.
socket_probe() {
    local criu=$1 dir out rc
    dir=$(mktemp -d /tmp/crabmigrate-socket-probe.XXXXXX)
    # 9>&-: the setup lock must not reach the tree (CRIU refuses to dump file locks)
    out=$(unshare --net --fork --kill-child -- bash -s "$criu" "$dir" 2>&1 9>&- <<'PROBE'
criu=$1 dir=$2
ip link set lo up || { echo "cannot bring up loopback in a new network namespace"; exit 1; }
# The tree: a shell that connects to a busybox echo listener, sends a line and reads it
# back, opens a UDP socket, then becomes `sleep` holding both; nc's child holds the
# accepted end.
setsid bash -c '
    busybox nc -ll -p 7070 -e cat </dev/null >/dev/null 2>&1 &
    for _ in $(seq 200); do { exec 3<>/dev/tcp/127.0.0.1/7070; } 2>/dev/null && break; sleep 0.02; done
    exec 4<>/dev/udp/127.0.0.1/7071
    echo ping >&3 && read -r -t 5 -u 3 reply && [ "$reply" = ping ] || exit 1
    exec sleep 600' </dev/null >/dev/null 2>&1 &
pid=$!
for _ in $(seq 250); do
    [[ $(readlink /proc/$pid/exe 2>/dev/null) == */sleep ]] && break; sleep 0.02
done
[[ $(readlink /proc/$pid/exe 2>/dev/null) == */sleep ]] || { echo "the probe's echo exchange did not finish"; exit 1; }
"$criu" dump --no-default-config -t "$pid" -D "$dir" -o dump.log -v2 --tcp-established
rc=$?
{ kill -KILL -- "-$pid"; wait "$pid"; } 2>/dev/null
if (( rc != 0 )); then
    grep -v RLIMIT_NOFILE "$dir/dump.log" | grep -m1 -E 'Error|rror \(' || echo "criu dump exited with $rc"
fi
exit "$rc"
PROBE
    )
    rc=$?
    [[ -z $LOG ]] || printf '%s socket probe (exit %s):\n%s\n' "$criu" "$rc" "$out" >>"$LOG"
    rm -rf -- "$dir"
    (( rc == 0 )) && return 0
    WHY="cannot dump a process holding TCP/UDP sockets: $(tail -n1 <<<"${out:-no output}")"
    return 1
}

# libs_in_prefix ROOT: every library criu links resolves, and inside ROOT.
libs_in_prefix() {
    local root=$1 ld=$1/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 out bad
    [[ -x $ld && -f $root/usr/sbin/criu ]] || { WHY="loader or criu binary missing"; return 1; }
    # ldd's way (LD_TRACE_LOADED_OBJECTS) rather than --list: --list stops at the first
    # missing library, this reports every one as "=> not found".
    out=$(LD_TRACE_LOADED_OBJECTS=1 "$ld" \
            --library-path "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" \
            "$root/usr/sbin/criu" 2>&1 || true)
    [[ $out == *'=>'* ]] || { WHY="ld.so cannot load criu: $(tail -n1 <<<"${out:-no output}")"; return 1; }
    bad=$(awk -v r="$root/" '/=>/ && index($3, r) != 1 { printf " %s", $1 }' <<<"$out")
    [[ -z $bad ]] || { WHY="libraries missing or outside the prefix:$bad"; return 1; }
}

require_root() {
    [[ $(id -u) == 0 ]] || die "must run as root: sudo scripts/setup.sh"
}

# Only install what is missing, so a provisioned machine never touches the network.
ensure_distro_packages() {
    local missing=() p
    if ! command -v dpkg-query >/dev/null; then
        for p in iptables-restore ip busybox nsenter unshare setsid ps runc podman conmon containerd ctr; do
            command -v "$p" >/dev/null || missing+=("$p")
        done
        (( ${#missing[@]} == 0 )) || die "missing commands: ${missing[*]}; install them with your package manager"
        say "packages: all present (no dpkg; checked commands)"; return
    fi
    for p in "${DISTRO_PKGS[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$p")
    done
    if (( ${#missing[@]} == 0 )); then say "packages: all present"; return; fi
    command -v apt-get >/dev/null || die "missing packages: ${missing[*]}; install them (no apt-get here)"
    say "packages: installing ${missing[*]}"
    if (( APT_UPDATED == 0 )); then
        logged apt-get update || die "apt-get update failed: check network access to the Debian mirror and /etc/apt/sources.list*"
        APT_UPDATED=1
    fi
    if ! logged apt-get install -y --no-install-recommends "${missing[@]}"; then
        # apt-get update only warns when a mirror is unreachable; the install then fails
        grep -qE 'Failed to fetch|Temporary failure resolving|Could not connect' "$LOG" &&
            die "apt-get install ${missing[*]} failed: the package mirror is unreachable; check network access and /etc/apt/sources.list*"
        die "apt-get install ${missing[*]} failed: fix apt (see log) and rerun"
    fi
}

# CRIU asks for a ~3.3 MB pipe for lazy pages; at the default 1 MiB that silently fails
# and the lazy dump dies later with "splice: Bad file descriptor".
ensure_pipe_size() {
    local f=/proc/sys/fs/pipe-max-size cur target conf=/etc/sysctl.d/60-crabmigrate.conf
    cur=$(cat "$f")
    if (( cur < PIPE_MIN )); then
        if { echo "$PIPE_MIN" >"$f"; } 2>/dev/null; then
            say "fs.pipe-max-size: $cur -> $PIPE_MIN (lazy pages need >= 3354624)"
        else
            echo "setup: warning: cannot raise fs.pipe-max-size from $cur (read-only /proc/sys?); lazy pages will fail" >&2
        fi
    else
        say "fs.pipe-max-size: $cur (ok, lazy pages need >= 3354624)"
    fi
    target=$(( cur > PIPE_MIN ? cur : PIPE_MIN ))
    if [[ "$(cat "$conf" 2>/dev/null || true)" != "fs.pipe-max-size = $target" ]]; then
        mkdir -p /etc/sysctl.d && echo "fs.pipe-max-size = $target" >"$conf"
    fi
}

# try_suite SUITE: download SUITE's criu with the dependency closure apt computes against an
# empty dpkg status (so no package list is kept by hand), unpack it into a staging dir and
# keep it if it passes `criu check` and the socket probe. Sets WHY when it does not.
# Uses a private, temporary apt configuration: the system's apt never sees SUITE.
try_suite() {
    local suite=$1 apt=$WORK/apt-$1 stage=$WORK/stage-$1 opts cand deb loader libdirs
    mkdir -p "$apt/sources.d" "$apt/empty" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/state" "$stage"
    : >"$apt/state/status"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
        "$MIRROR" "$suite" "$KEYRING" >"$apt/sources.d/$suite.sources"   # deb822: *.sources
    opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources.d"
        -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$apt/empty"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o "Dir::State::status=$apt/state/status" -o "Dir::State::extended_states=$apt/state/extended"
        -o "Dir::Log=$apt/log" -o APT::Sandbox::User=root -o Debug::NoLocking=1
        -o APT::Install-Recommends=false -o APT::Get::Download-Only=true)
    if ! logged apt-get "${opts[@]}" -o APT::Update::Error-Mode=any update; then
        grep -q NO_PUBKEY "$LOG" && { WHY="$KEYRING lacks $suite's key (apt-get install --only-upgrade debian-archive-keyring)"; return 1; }
        WHY="cannot fetch $suite's package lists from $MIRROR"; return 1
    fi
    cand=$(apt-cache "${opts[@]}" policy criu 2>>"$LOG" | sed -n 's/^ *Candidate: *//p')
    [[ -n $cand && $cand != '(none)' ]] || { WHY="no criu package in $suite"; return 1; }
    at_least "$cand" "$CRIU_MIN" || { WHY="$suite has criu $cand, need >= $CRIU_MIN"; return 1; }
    say "criu: trying $suite's criu $cand"
    logged apt-get "${opts[@]}" -y install criu ||
        { WHY="apt-get could not download criu $cand and its dependencies from $suite"; return 1; }
    for deb in "$apt"/cache/archives/*.deb; do
        dpkg -x "$deb" "$stage"
        printf '%s=%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$WORK/packages-$suite"
    done
    libs_in_prefix "$stage" || { WHY="$suite's criu does not load from the prefix: $WHY"; return 1; }
    # Tried in place in the staging dir; the final wrapper points at $PREFIX.
    loader=$stage/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    libdirs=$stage/usr/lib/x86_64-linux-gnu:$stage/lib/x86_64-linux-gnu
    mkdir -p "$stage/bin"
    printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' "$loader" "$libdirs" "$stage/usr/sbin/criu" >"$stage/bin/criu"
    chmod 755 "$stage/bin/criu"
    criu_version "$stage/bin/criu" && criu_check "$stage/bin/criu" && socket_probe "$stage/bin/criu" ||
        { WHY="$suite's criu $cand: $WHY"; return 1; }
    # --library-path, not LD_LIBRARY_PATH: programs CRIU runs (iptables-restore, ip) must
    # keep using the system's own libraries.
    printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' "$LOADER" "$LIBDIRS" "$PREFIX/usr/sbin/criu" >"$stage/bin/criu"
    touch "$stage/$MARKER"
    { printf 'suite=%s\nversion=%s\n' "$suite" "$cand"; cat "$WORK/packages-$suite"; } >"$WORK/stamp"
    WON=$suite
}

# Tries each suite in order and moves the first that works into $PREFIX.
install_private_criu() {
    local parent suite why=()
    [[ $(uname -m) == x86_64 ]] ||
        die "the private CRIU prefix supports x86_64 only (this is $(uname -m)); install CRIU >= $CRIU_MIN from your distribution"
    [[ -r $KEYRING ]] || die "missing $KEYRING: apt-get install debian-archive-keyring"
    if [[ -e $PREFIX && ! -e $PREFIX/$MARKER && -n "$(ls -A "$PREFIX")" ]]; then
        die "refusing to replace $PREFIX: not made by this script; set CRABMIGRATE_PREFIX elsewhere"
    fi
    parent=$(dirname "$PREFIX"); mkdir -p "$parent"
    WORK=$(mktemp -d "$parent/.criu-setup.XXXXXX")   # same filesystem: the final mv is a rename
    WON=""
    for suite in "${SUITES[@]}"; do
        if try_suite "$suite"; then break; fi
        say "criu: $WHY"; why+=("$WHY")
    done
    [[ -n $WON ]] || die "no Debian suite gave a working CRIU >= $CRIU_MIN ($(IFS=';'; echo "${why[*]}")); check network access to $MIRROR or install CRIU >= $CRIU_MIN on PATH"
    # The stamp is written only after `criu check` passes in place (see ensure_criu), so an
    # interrupted run never leaves a prefix that looks complete.
    [[ ! -e $PREFIX ]] || mv -- "$PREFIX" "$WORK/old"
    mv -- "$WORK/stage-$WON" "$PREFIX"
}

ensure_criu() {
    local cand
    # 1. Our private prefix, when a previous run completed it, its files are intact and its
    #    CRIU is new enough. A failing `criu check` then is about this machine, and
    #    reinstalling won't help (e.g. in a network namespace whose loopback is down).
    if [[ -e $STAMP ]]; then
        if libs_in_prefix "$PREFIX" && criu_version "$PREFIX/bin/criu"; then
            criu_check "$PREFIX/bin/criu" ||
                die "$PREFIX/bin/criu is installed but fails ($WHY): run '$PREFIX/bin/criu check' to see why"
            CRIU=$PREFIX/bin/criu
            say "criu: using $CRIU ($CRIU_VERSION, $(sed -n 's/^suite=//p' "$STAMP" | grep . || echo 'suite not recorded'))"
            return
        fi
        say "criu: replacing $PREFIX ($WHY)"
        rm -f -- "$STAMP"
    fi
    # 2. A CRIU on PATH (e.g. the distribution's), used as is when new enough and working.
    cand=$(command -v criu || true)
    if [[ -n $cand && $(readlink -f "$cand") != "$PREFIX"/* ]]; then
        if criu_version "$cand" && criu_check "$cand" && socket_probe "$cand"; then
            CRIU=$cand; say "criu: using $CRIU ($CRIU_VERSION, from PATH)"; return
        fi
        say "criu: ignoring $cand ($WHY)"
    fi
    # 3. The first Debian suite whose CRIU works, in the private prefix.
    command -v apt-get >/dev/null ||
        die "no usable CRIU >= $CRIU_MIN and no apt-get: install CRIU >= $CRIU_MIN (criu check must say 'Looks good.') on PATH"
    install_private_criu
    { criu_version "$PREFIX/bin/criu" && criu_check "$PREFIX/bin/criu"; } ||
        die "$PREFIX/bin/criu fails after install ($WHY): run '$PREFIX/bin/criu check' to see why"
    mv -- "$WORK/stamp" "$STAMP"
    CRIU=$PREFIX/bin/criu; say "criu: installed $CRIU ($CRIU_VERSION from Debian $WON)"
}

# Opt-in only: runc finds CRIU on PATH, crabmigrate does not need it there.
maybe_link_on_path() {
    local link=/usr/local/sbin/criu
    [[ ${CRABMIGRATE_CRIU_ON_PATH:-0} == 1 && $CRIU == "$PREFIX/bin/criu" ]] || return 0
    [[ ! -e $link || -L $link ]] || die "$link exists and is not a symlink: remove it or unset CRABMIGRATE_CRIU_ON_PATH"
    [[ $(readlink "$link" || true) == "$CRIU" ]] || ln -sfn -- "$CRIU" "$link"
    say "criu: $link -> $CRIU"
}

main() {
    require_root
    mkdir -p "$(dirname "$PREFIX")"
    exec 9>"$(dirname "$PREFIX")/.crabmigrate-setup.lock"
    flock -n 9 || die "another scripts/setup.sh is running; wait for it"
    rm -rf -- "$(dirname "$PREFIX")"/.criu-setup.*   # left by a killed run (we hold the lock)
    LOG=$(mktemp /tmp/crabmigrate-setup.XXXXXX.log)
    ensure_distro_packages
    ensure_pipe_size
    ensure_criu
    maybe_link_on_path
    rm -f -- "$LOG"; LOG=""
    if [[ $QUIET == 1 ]]; then echo "$CRIU"; else echo "crabmigrate will use CRIU: $CRIU"; fi
}

main
