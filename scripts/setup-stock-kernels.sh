#!/usr/bin/env bash
# Set-up for the stock-kernel test tier (tests/stock_kernel): QEMU, a static
# busybox for the guest's initramfs, kmod (the guest loads veth, nf_tables
# ... on demand through the host's /sbin/modprobe), and Debian's stock
# kernels listed in tests/stock_kernel/kernels.txt, each unpacked with its
# matching headers under $CACHE/<release>/root (never installed on the host:
# a kernel image package would pull initramfs-tools and rewrite /boot).
#
#   ./scripts/setup-stock-kernels.sh      (as root; scripts/test.sh runs it)
#
# Idempotent: a kernel already unpacked (its .ready stamp) is not fetched
# again. Debian packages only. Output goes to stderr.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
LIST="$REPO/tests/stock_kernel/kernels.txt"
CACHE="${CONNSCOPE_STOCK_KERNELS:-/var/cache/connscope/stock-kernels}"
LOG=/tmp/connscope-setup-stock-kernels.log
PKGS=(qemu-system-x86 busybox-static kmod)

info() { [[ "${CONNSCOPE_SETUP_QUIET:-0}" == 1 ]] || echo "connscope setup (stock kernels): $*" >&2; }
die() {
    [[ -s "$LOG" ]] && tail -n 20 "$LOG" >&2
    echo "connscope setup (stock kernels): error: $* (log: $LOG)" >&2
    exit 1
}

[[ $EUID -eq 0 ]] || die "must be run as root"
exec 9<"${BASH_SOURCE[0]}"
flock 9  # two test runs at once share one cache

APT=(apt-get -q -y -o DPkg::Lock::Timeout=300)
export DEBIAN_FRONTEND=noninteractive
UPDATED=0
apt_update() {
    ((UPDATED)) && return 0
    "${APT[@]}" update </dev/null >>"$LOG" 2>&1 || die "apt-get update failed"
    UPDATED=1
}

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]})); then
    : >"$LOG"
    apt_update
    info "apt-get install ${missing[*]}"
    "${APT[@]}" install --no-install-recommends "${missing[@]}" </dev/null >>"$LOG" 2>&1 ||
        die "apt-get install ${missing[*]} failed"
fi

while read -r release pkgs; do
    [[ -z "$release" || "$release" == \#* ]] && continue
    dir="$CACHE/$release"
    [[ -e "$dir/.ready" ]] && continue
    info "fetching Debian's $release kernel and its headers into $dir"
    rm -rf "$dir"
    mkdir -p "$dir/debs" "$dir/root"
    # apt's sandbox user cannot write into root's directories
    chown _apt "$dir/debs" 2>/dev/null || true
    apt_update
    # shellcheck disable=SC2086  # one package name per word
    (cd "$dir/debs" && "${APT[@]}" download $pkgs </dev/null >>"$LOG" 2>&1) ||
        die "apt-get download $pkgs failed (is the ABI still in the archive? see $LIST)"
    for deb in "$dir"/debs/*.deb; do
        dpkg -x "$deb" "$dir/root" || die "dpkg -x $deb failed"
    done
    rm -rf "$dir/debs"
    [[ -f "$dir/root/boot/vmlinuz-$release" ]] || die "no boot/vmlinuz-$release in the image package"
    # The package ships no modules.dep (its postinst makes one): the guest's
    # modprobe needs it.
    depmod -b "$dir/root" "$release" >>"$LOG" 2>&1 || die "depmod for $release failed"
    # The guest lays this tree over the host's root: on a merged-/usr host
    # (/lib -> usr/lib) a real lib/ directory here would hide the host's
    # libraries, so the modules move under usr/lib like everything else.
    if [[ -L /lib ]]; then
        mkdir -p "$dir/root/usr/lib"
        cp -a "$dir/root/lib/." "$dir/root/usr/lib/"
        rm -rf "$dir/root/lib"
    fi
    touch "$dir/.ready"
done <"$LIST"
