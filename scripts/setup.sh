#!/usr/bin/env bash
# Provision a machine for crabmigrate: a working CRIU >= 4.0, the distribution tools
# the tests use, and a pipe size limit large enough for lazy (post-copy) migration.
# Idempotent: a second run on a provisioned machine needs no network.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo scripts/setup.sh [--quiet] [--help]

Provisions this machine (Debian/Ubuntu, run as root) for crabmigrate:
  - CRIU >= 4.0 that passes `criu check`: the one on PATH if good, otherwise Debian
    trixie's criu and the libraries it links, unpacked into a private prefix and run
    through the prefix's own loader (the system C library is not touched)
  - iptables iproute2 busybox-static util-linux procps runc (only those missing)
  - fs.pipe-max-size >= 4194304 (persisted in /etc/sysctl.d/60-crabmigrate.conf)
The last line printed is the CRIU binary crabmigrate will use.

  --quiet   print only that last line (and errors)

Environment:
  CRABMIGRATE_PREFIX          private CRIU prefix (default /opt/crabmigrate/criu)
  CRABMIGRATE_DEBIAN_MIRROR   Debian mirror (default http://deb.debian.org/debian)
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
DISTRO_PKGS=(iptables iproute2 busybox-static util-linux procps runc)
CRIU_PKGS=(criu libcompel1 libc6 libgnutls30t64 libnettle8t64 libhogweed6t64 libp11-kit0
    libunistring5 libnftables1 libprotobuf-c1 libnl-3-200 libnet1 libbsd0 libuuid1 libgmp10
    libidn2-0 libtasn1-6 libjansson4 libxtables12 libmnl0 libnftnl11 libffi8 libmd0 libedit2
    libbpf1 libelf1t64 zlib1g libzstd1 libtinfo6 libgcc-s1 libcap2)
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"   # sudo/su may drop the sbin dirs
LOG=""; WORK=""; CRIU=""; CRIU_VERSION=""; WHY=""; APT_UPDATED=0

say() { [[ $QUIET == 1 ]] || echo "$*"; }
die() {  # one line; keeps the log (if anything was logged) and names it
    local msg="setup: error: $*"
    if [[ -n $LOG && -s $LOG ]]; then msg+=" (log: $LOG)"; elif [[ -n $LOG ]]; then rm -f -- "$LOG"; fi
    echo "$msg" >&2; exit 1
}
logged() { "$@" >>"$LOG" 2>&1; }
cleanup() { [[ -z $WORK ]] || rm -rf -- "$WORK"; }
trap cleanup EXIT

# criu_version BIN: true if BIN runs and is CRIU >= 4.0. Sets CRIU_VERSION, WHY.
criu_version() {
    local major
    [[ -x $1 ]] || { WHY="$1 missing"; return 1; }
    CRIU_VERSION=$("$1" --version 2>/dev/null | sed -n 's/^Version: *//p' || true)
    [[ -n $CRIU_VERSION ]] || { WHY="'$1 --version' failed"; return 1; }
    major=${CRIU_VERSION%%.*}
    [[ $major =~ ^[0-9]+$ ]] && (( major >= 4 )) && return 0
    WHY="version $CRIU_VERSION, need >= 4.0"; return 1
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
        for p in iptables-restore ip busybox nsenter unshare setsid ps runc; do
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

# Download trixie's criu and the libraries it links with a private apt configuration
# (no trixie source is ever seen by the system's apt), unpack them into a staging dir,
# check them, and only then move the staging dir into place.
install_private_criu() {
    local parent apt deb stamp=() opts
    [[ $(uname -m) == x86_64 ]] ||
        die "the private CRIU prefix supports x86_64 only (this is $(uname -m)); install CRIU >= 4.0 from your distribution"
    [[ -r $KEYRING ]] || die "missing $KEYRING: apt-get install debian-archive-keyring"
    if [[ -e $PREFIX && ! -e $PREFIX/$MARKER && -n "$(ls -A "$PREFIX")" ]]; then
        die "refusing to replace $PREFIX: not made by this script; set CRABMIGRATE_PREFIX elsewhere"
    fi
    parent=$(dirname "$PREFIX"); mkdir -p "$parent"
    WORK=$(mktemp -d "$parent/.criu-setup.XXXXXX")   # same filesystem: the final mv is a rename
    apt=$WORK/apt
    mkdir -p "$apt/sources.d" "$apt/empty" "$apt/lists/partial" "$apt/cache/archives/partial" \
        "$WORK/debs" "$WORK/stage"
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
        "$MIRROR" "$KEYRING" >"$apt/sources.d/trixie.sources"   # deb822 needs *.sources in SourceParts
    opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources.d"
        -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$apt/empty"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o Dir::State::status=/var/lib/dpkg/status -o APT::Sandbox::User=root)

    say "criu: downloading Debian trixie's criu and ${#CRIU_PKGS[@]} packages from $MIRROR"
    if ! logged apt-get "${opts[@]}" -o APT::Update::Error-Mode=any update; then
        grep -q NO_PUBKEY "$LOG" && die "$KEYRING lacks trixie's key: apt-get install --only-upgrade debian-archive-keyring"
        die "cannot fetch trixie package lists from $MIRROR (apt-get update failed): check network access or set CRABMIGRATE_DEBIAN_MIRROR"
    fi
    (cd "$WORK/debs" && logged apt-get "${opts[@]}" download "${CRIU_PKGS[@]}") ||
        die "apt-get download from $MIRROR failed: check network access or set CRABMIGRATE_DEBIAN_MIRROR"

    for deb in "$WORK"/debs/*.deb; do
        dpkg -x "$deb" "$WORK/stage"
        stamp+=("$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)")
    done
    libs_in_prefix "$WORK/stage" || die "unpacked CRIU is incomplete ($WHY): the package list in setup.sh needs updating"
    mkdir -p "$WORK/stage/bin"
    # --library-path, not LD_LIBRARY_PATH: programs CRIU runs (iptables-restore, ip)
    # must keep using the system's own libraries.
    printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' \
        "$LOADER" "$LIBDIRS" "$PREFIX/usr/sbin/criu" >"$WORK/stage/bin/criu"
    chmod 755 "$WORK/stage/bin/criu"
    touch "$WORK/stage/$MARKER"
    printf '%s\n' "${stamp[@]}" >"$WORK/stamp"

    # The stamp is written only after `criu check` passes in place (see ensure_criu),
    # so an interrupted run never leaves a prefix that looks complete.
    [[ ! -e $PREFIX ]] || mv -- "$PREFIX" "$WORK/old"
    mv -- "$WORK/stage" "$PREFIX"
}

ensure_criu() {
    local cand
    # 1. Our private prefix, when a previous run completed it and its files are intact.
    #    A failing `criu check` then is about this machine, and reinstalling won't help
    #    (e.g. in a network namespace whose loopback is down, kerndat fails).
    if [[ -e $STAMP ]]; then
        if libs_in_prefix "$PREFIX" && criu_version "$PREFIX/bin/criu"; then
            criu_check "$PREFIX/bin/criu" ||
                die "$PREFIX/bin/criu is installed but fails ($WHY): run '$PREFIX/bin/criu check' to see why"
            CRIU=$PREFIX/bin/criu; say "criu: using $CRIU ($CRIU_VERSION)"; return
        fi
        say "criu: $PREFIX is broken ($WHY); reinstalling"
        rm -f -- "$STAMP"
    fi
    # 2. A CRIU on PATH (e.g. the distribution's, on Debian 13 or newer).
    cand=$(command -v criu || true)
    if [[ -n $cand && $(readlink -f "$cand") != "$PREFIX"/* ]]; then
        if criu_version "$cand" && criu_check "$cand"; then
            CRIU=$cand; say "criu: using $CRIU ($CRIU_VERSION, from PATH)"; return
        fi
        say "criu: ignoring $cand ($WHY)"
    fi
    # 3. Install Debian trixie's CRIU into the private prefix.
    command -v apt-get >/dev/null ||
        die "no usable CRIU >= 4.0 and no apt-get: install CRIU >= 4.0 (criu check must say 'Looks good.') on PATH"
    install_private_criu
    { criu_version "$PREFIX/bin/criu" && criu_check "$PREFIX/bin/criu"; } ||
        die "$PREFIX/bin/criu fails after install ($WHY): run '$PREFIX/bin/criu check' to see why"
    mv -- "$WORK/stamp" "$STAMP"
    CRIU=$PREFIX/bin/criu; say "criu: installed $CRIU ($CRIU_VERSION)"
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
