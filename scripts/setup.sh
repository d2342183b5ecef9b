#!/usr/bin/env bash
# connscope set-up for a Debian (bookworm) host: apt packages, kernel headers
# for BCC, tracefs, and the project venv at $REPO/.venv.
#
#   ./scripts/setup.sh      (as root)
#
# Idempotent and fast (well under 2 s) when everything is already in place:
# every step checks before it acts. All output goes to stderr (stdout stays
# clean for the agent's JSON lines). A no-op run prints nothing except real
# warnings. CONNSCOPE_SETUP_QUIET=1 suppresses the info lines (note that sudo
# drops it unless passed as `sudo CONNSCOPE_SETUP_QUIET=1 ...`).
#
# BCC comes from Debian (python3-bpfcc), reached through a venv made with
# /usr/bin/python3 --system-site-packages. Never pip-install the PyPI package
# named "bcc": it is an unrelated project.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$REPO/.venv"
STAMP="$VENV/.connscope-pip-stamp"
SYS_PY=/usr/bin/python3
KVER="$(uname -r)"
APT_LOG=/tmp/connscope-setup-apt.log
PKGS=(python3-bpfcc bpfcc-tools bpftool linux-headers-amd64 nftables iptables iproute2 python3-venv tmux
      systemd systemd-container util-linux)  # systemd-analyze, systemd-nspawn (service tests), setpriv

info() { [[ "${CONNSCOPE_SETUP_QUIET:-0}" == 1 ]] || echo "connscope setup: $*" >&2; }
# note: a one-time change to the system worth knowing about; shown even when quiet.
note() { echo "connscope setup: $*" >&2; }
warn() { echo "connscope setup: warning: $*" >&2; }
die()  { echo "connscope setup: error: $*" >&2; exit 1; }

# Show the end of a log on stderr, then die.
die_log() { # LOG MESSAGE
    if [[ -s "$1" ]]; then
        echo "---- last lines of $1 ----" >&2
        tail -n 25 "$1" >&2
        echo "----" >&2
    fi
    die "$2 (full log: $1)"
}

[[ $EUID -eq 0 ]] || die "must be run as root (try: sudo $0)"

# ---------------------------------------------------------------- checks ---

missing_pkgs() { # prints the packages of "$@" that are not fully installed
    local -A ok=()
    local name status
    while read -r name status; do
        if [[ "$status" == ii* ]]; then ok["${name%%:*}"]=1; fi
    done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)
    for name in "$@"; do
        [[ -n "${ok[$name]:-}" ]] || echo "$name"
    done
}

# BCC reads /lib/modules/$KVER/build (generated headers, autoconf.h) and
# /lib/modules/$KVER/source (kconfig.h and the rest) when both exist.
headers_ok() {
    local b="/lib/modules/$KVER/build" s="/lib/modules/$KVER/source"
    [[ -e "$b/include/generated/autoconf.h" ]] || return 1
    [[ -e "$s/include/linux/kconfig.h" || -e "$b/include/linux/kconfig.h" ]]
}

venv_ok() {
    [[ -x "$VENV/bin/python" && -f "$VENV/pyvenv.cfg" ]] || return 1
    grep -qE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" || return 1
    grep -qE '^home *= */usr/bin/?$' "$VENV/pyvenv.cfg"
}

# Lock so that two concurrent runs (e.g. two ./connscope started at once)
# do not race on apt, the links or pip. Taken on this script's own file: no
# stray lock file. Only taken when there is work to do.
LOCKED=0
lock() {
    ((LOCKED)) && return 0
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    LOCKED=1
}

# ------------------------------------------------------------- 1. apt ------

mapfile -t MISSING < <(missing_pkgs "${PKGS[@]}")
HEADERS_OK=1; headers_ok || HEADERS_OK=0

if ((${#MISSING[@]})) || ! ((HEADERS_OK)); then
    lock
    mapfile -t MISSING < <(missing_pkgs "${PKGS[@]}")
    HEADERS_OK=1; headers_ok || HEADERS_OK=0
fi

if ((${#MISSING[@]})) || ! ((HEADERS_OK)); then
    export DEBIAN_FRONTEND=noninteractive
    APT=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    : >"$APT_LOG"
    info "apt-get update (log: $APT_LOG)"
    "${APT[@]}" update </dev/null >>"$APT_LOG" 2>&1 || die_log "$APT_LOG" "apt-get update failed"
    # The running kernel's own headers are the right thing when Debian has them.
    if ! ((HEADERS_OK)) && [[ "$(missing_pkgs "linux-headers-$KVER")" ]] &&
        apt-cache policy "linux-headers-$KVER" 2>/dev/null | grep -qE 'Candidate: [^(]'; then
        MISSING+=("linux-headers-$KVER")
    fi
    if ((${#MISSING[@]})); then
        info "apt-get install ${MISSING[*]} (log: $APT_LOG)"
        "${APT[@]}" install --no-install-recommends "${MISSING[@]}" </dev/null >>"$APT_LOG" 2>&1 ||
            die_log "$APT_LOG" "apt-get install ${MISSING[*]} failed"
        mapfile -t STILL < <(missing_pkgs "${PKGS[@]}")
        ((${#STILL[@]} == 0)) || die_log "$APT_LOG" "still not installed after apt-get: ${STILL[*]}"
    fi
fi

# ---------------------------------------------------- 2. kernel headers ----

if ! headers_ok; then
    lock
    ARCH="$(dpkg --print-architecture)"
    BEST="$(
        for d in /usr/src/linux-headers-*-"$ARCH"; do
            [[ -d "$d" ]] || continue
            v="${d#/usr/src/linux-headers-}"; v="${v%-"$ARCH"}"
            if [[ -e "$d/include/generated/autoconf.h" &&
                  -e "/usr/src/linux-headers-$v-common/include/linux/kconfig.h" ]]; then
                echo "$v"
            fi
        done | sort -V | tail -n 1
    )"
    [[ -n "$BEST" ]] || die "no kernel headers for $KVER and no Debian linux-headers-*-$ARCH to fall back to (apt-get install linux-headers-$ARCH)"
    MODDIR="/lib/modules/$KVER"
    mkdir -p "$MODDIR"
    for l in build source; do
        # Replace a missing or dangling/wrong link; never delete a real directory.
        if [[ -e "$MODDIR/$l" && ! -L "$MODDIR/$l" ]]; then
            mv "$MODDIR/$l" "$MODDIR/$l.connscope-broken.$(date +%s)"
            warn "moved broken $MODDIR/$l aside to $MODDIR/$l.connscope-broken.*"
        fi
    done
    ln -sfn "/usr/src/linux-headers-$BEST-$ARCH" "$MODDIR/build"
    ln -sfn "/usr/src/linux-headers-$BEST-common" "$MODDIR/source"
    headers_ok || die "linked $MODDIR/{build,source} to Debian's $BEST headers but they are still incomplete"
    note "no headers for kernel $KVER; using Debian's $BEST headers (safe: connscope's BPF reads no struct offsets from headers)"
fi

# -------------------------------------------------- 3. tracefs and BTF -----

# events/header_page exists in every mounted tracefs.
if [[ ! -e /sys/kernel/tracing/events/header_page ]]; then
    lock
    if [[ ! -e /sys/kernel/tracing/events/header_page ]]; then
        mount -t tracefs nodev /sys/kernel/tracing ||
            die "cannot mount tracefs on /sys/kernel/tracing (TRACEPOINT_PROBE needs it)"
        info "mounted tracefs on /sys/kernel/tracing"
    fi
fi
[[ -e /sys/kernel/btf/vmlinux ]] ||
    warn "/sys/kernel/btf/vmlinux is missing: kernel BTF is needed to read struct offsets at load time"

# ------------------------------------------------------------- 4. venv -----

if ! venv_ok || [[ ! -e "$STAMP" || "$REPO/pyproject.toml" -nt "$STAMP" ]]; then
    lock
    if ! venv_ok; then
        if [[ -e "$VENV" ]]; then
            info "recreating $VENV (it was not made from $SYS_PY with --system-site-packages)"
        else
            info "creating $VENV"
        fi
        rm -f "$STAMP"
        "$SYS_PY" -m venv --clear --system-site-packages "$VENV" ||
            die "'$SYS_PY -m venv' failed (is python3-venv installed?)"
    fi
    # bcc must be Debian's (python3-bpfcc), not anything pip put in the venv.
    BCC_FILE="$("$VENV/bin/python" -c 'from bcc import BPF; import bcc; print(bcc.__file__)' 2>&1)" ||
        die "$VENV/bin/python cannot import bcc: ${BCC_FILE##*$'\n'}"
    [[ "$BCC_FILE" == /usr/lib/python3/dist-packages/* ]] ||
        die "the venv's bcc comes from $BCC_FILE, not Debian's python3-bpfcc (the PyPI 'bcc' is unrelated: pip uninstall it)"
    if [[ ! -e "$STAMP" || "$REPO/pyproject.toml" -nt "$STAMP" ]]; then
        PIP_LOG="$VENV/connscope-pip.log"
        info "pip install -e '$REPO[test]' (log: $PIP_LOG)"
        "$VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q -e "$REPO[test]" \
            </dev/null >"$PIP_LOG" 2>&1 || die_log "$PIP_LOG" "pip install -e '$REPO[test]' failed"
        touch "$STAMP"
        info "ready: $VENV"
    fi
fi
