#!/usr/bin/env bash
# connscope benchmark, the one command (as root, from a checkout):
#
#   ./bench/run.sh            # (as root) full run: about 6.5 minutes on 2 cores
#   ./bench/run.sh --quick    # short phases, one round (development)
#
# Sets up the machine (scripts/setup.sh), installs what only the bench needs
# (a C compiler for the churn generator, BCC's tools, the `bench` Python
# extra: matplotlib and py-spy), then runs `python -m bench` from the venv.
# It writes BENCHMARKS.md and bench/results/. Progress goes to stderr.
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"
VENV="$REPO/.venv"
APT_LOG=/tmp/connscope-bench-apt.log
PKGS=(gcc libc6-dev bpfcc-tools bpftool nftables iproute2)

die() { echo "bench: error: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must be run as root (try: sudo $0)"

bash "$REPO/scripts/setup.sh"

# Same check as scripts/setup.sh: a package counts when dpkg says "ii".
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    APT=(apt-get -q -y -o DPkg::Lock::Timeout=300)
    echo "bench: apt-get install ${missing[*]} (log: $APT_LOG)" >&2
    { "${APT[@]}" update && "${APT[@]}" install --no-install-recommends "${missing[@]}"; } \
        </dev/null >"$APT_LOG" 2>&1 || { tail -n 20 "$APT_LOG" >&2; die "apt-get install failed (log: $APT_LOG)"; }
fi

if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || [[ ! -x "$VENV/bin/py-spy" ]]; then
    echo "bench: pip install -e '$REPO[test,bench]'" >&2
    "$VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q -e "$REPO[test,bench]" \
        </dev/null >&2 || die "pip install of the bench extra failed"
fi

cd "$REPO"
exec "$VENV/bin/python" -m bench "$@"
