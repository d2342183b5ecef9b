#!/usr/bin/env bash
# Install connscope as a systemd service (see README "Running as a service"):
#
#   ./scripts/install.sh [--start]     (as root)
#
# - a venv at /opt/connscope/venv made from /usr/bin/python3
#   --system-site-packages (so `import bcc` is Debian's python3-bpfcc), with
#   this checkout installed into it (not editable: the service never runs
#   code from the checkout);
# - the unit at /etc/systemd/system/connscope.service;
# - the user `connscope` from /usr/lib/sysusers.d/connscope.conf;
# - /etc/connscope/connscope.toml from etc/connscope.toml.example, only
#   when absent (an existing configuration is never overwritten);
# - the example drop-ins under /opt/connscope/dropins.
#
# Idempotent: a second run updates the code and the unit and changes nothing
# else. Options:
#   --root DIR    install everything under DIR instead of / (tests, trying
#                 it out): DIR/opt/connscope, DIR/etc/systemd/system,
#                 DIR/etc/connscope, the user in DIR/etc/passwd. The unit's
#                 paths point into DIR, so the tree works where it is (a venv
#                 is not relocatable: this is not a DESTDIR for images).
#                 systemctl is not called.
#   --prefix DIR  where the agent lives (default ROOT/opt/connscope); the
#                 unit's ExecStart is rewritten to match.
#   --start       also `systemctl enable --now connscope` (needs systemd).
set -euo pipefail
# the service user must read the venv whatever root's umask is
umask 022

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
ROOT=/
PREFIX=
START=0
SYS_PY=/usr/bin/python3
DEFAULT_PREFIX=/opt/connscope

info() { echo "connscope install: $*" >&2; }
die()  { echo "connscope install: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) PREFIX="${1#*=}"; shift ;;
        --start) START=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (fix: see $0 --help)" ;;
    esac
done

[[ $EUID -eq 0 ]] || die "must be run as root (fix: sudo $0)"
[[ "$ROOT" == /* ]] || die "--root must be an absolute path, got $ROOT"
ROOT="${ROOT%/}"  # "" for /
PREFIX="${PREFIX:-$ROOT$DEFAULT_PREFIX}"
[[ "$PREFIX" == /* ]] || die "--prefix must be an absolute path, got $PREFIX"
VENV="$PREFIX/venv"
[[ $START -eq 0 || -z "$ROOT" ]] || die "--start only works without --root"

# ------------------------------------------------------------- checks ---
[[ -x $SYS_PY ]] || die "$SYS_PY is missing (fix: apt-get install python3 python3-venv)"
$SYS_PY -c 'import bcc' 2>/dev/null \
    || die "Debian's BCC is missing for $SYS_PY (fix: apt-get install python3-bpfcc bpfcc-tools linux-headers-\$(uname -r), or run scripts/setup.sh; never pip install bcc)"
$SYS_PY -c 'import venv, ensurepip' 2>/dev/null || die "python3-venv is missing (fix: apt-get install python3-venv)"
EXAMPLE="$REPO/etc/connscope.toml.example"
[[ -f "$EXAMPLE" ]] || die "$EXAMPLE is missing from the checkout (fix: python -m agent.config.example > etc/connscope.toml.example)"

# --------------------------------------------------------------- venv ---
# Re-created only when it was not made from Debian's python with the system
# site-packages (import bcc would fail in it).
if [[ -f "$VENV/pyvenv.cfg" ]] && ! { grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" \
        && grep -qx "home = $(dirname $SYS_PY)" "$VENV/pyvenv.cfg"; }; then
    info "re-creating $VENV (not made from $SYS_PY --system-site-packages)"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    info "creating $VENV"
    mkdir -p "$PREFIX"
    $SYS_PY -m venv --system-site-packages "$VENV"
fi

# pip builds in the source tree: build from a copy of what the package needs,
# so a read-only or busy checkout is never written to.
SRC="$(mktemp -d /tmp/connscope-install.XXXXXX)"
trap 'rm -rf "$SRC"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/agent" "$REPO/bpf" "$SRC/"
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
info "installing connscope into $VENV"
PIP_LOG="$PREFIX/install-pip.log"
if ! "$VENV/bin/pip" install --disable-pip-version-check --no-input --upgrade "$SRC" >"$PIP_LOG" 2>&1; then
    tail -n 20 "$PIP_LOG" >&2
    die "pip install failed (full log: $PIP_LOG)"
fi
"$VENV/bin/python" -c 'import bcc, agent' || die "the venv cannot import bcc and agent"
install -m 0644 "$REPO/README.md" "$PREFIX/README.md"
install -d -m 0755 "$PREFIX/dropins"
install -m 0644 "$REPO"/systemd/dropins/*.conf "$PREFIX/dropins/"

# --------------------------------------------------------------- user ---
install -D -m 0644 "$REPO/systemd/connscope.sysusers" "$ROOT/usr/lib/sysusers.d/connscope.conf"
install -d -m 0755 "$ROOT/etc"
if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers --root="${ROOT:-/}" "$ROOT/usr/lib/sysusers.d/connscope.conf"
elif [[ -z "$ROOT" ]] && ! getent passwd connscope >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin connscope
fi
GID="$(awk -F: '$1 == "connscope" {print $3}' "$ROOT/etc/group")"
[[ -n "$GID" ]] || die "group connscope was not created in $ROOT/etc/group"

# ---------------------------------------------------- unit and config ---
UNIT="$ROOT/etc/systemd/system/connscope.service"
install -d -m 0755 "$(dirname "$UNIT")"
sed -e "s#$DEFAULT_PREFIX/#$PREFIX/#g" -e "s# /etc/connscope/# $ROOT/etc/connscope/#g" \
    "$REPO/systemd/connscope.service" > "$UNIT.tmp"
chmod 0644 "$UNIT.tmp"
mv "$UNIT.tmp" "$UNIT"
install -d -m 0755 "$ROOT/etc/connscope"
CONF="$ROOT/etc/connscope/connscope.toml"
if [[ -e "$CONF" ]]; then
    info "keeping $CONF"
else
    # the service user reads it; Kafka credentials may live in it
    install -m 0640 -o root -g "$GID" "$EXAMPLE" "$CONF"
    info "wrote $CONF (every key commented out: the defaults)"
fi

# ---------------------------------------------------------- systemctl ---
if [[ -z "$ROOT" && -d /run/systemd/system ]]; then
    systemctl daemon-reload
    if [[ $START -eq 1 ]]; then
        systemctl enable --now connscope.service
        info "started: systemctl status connscope; journalctl -u connscope"
    else
        info "next: systemctl enable --now connscope"
    fi
elif [[ $START -eq 1 ]]; then
    die "systemd is not running here: cannot start the service"
else
    info "installed under ${ROOT:-/} (systemd not called)"
fi
