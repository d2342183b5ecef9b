"""Boot one of Debian's stock kernels under QEMU and run one command in it.

The guest sees this host's root filesystem read-only over 9p, with a tmpfs
overlay on top so that it can write without touching the host, and the
stock kernel's own modules and headers (unpacked by
scripts/setup-stock-kernels.sh) layered above that. It has no network card:
its only traffic is on its own loopback and the namespaces a test makes
inside it. The command's output comes back on the second serial port, its
exit status on the third; a writable share (`outdir`) carries files back.

    kernel = StockKernel.find("6.1.0-56-amd64")
    result = kernel.run("uname -r", timeout=60)
    assert (result.status, result.output) == (0, "6.1.0-56-amd64\\n")

Measured here (KERNEL-FACTS): QEMU's TCG only (/dev/kvm is kvm_pvm, which
QEMU cannot use), about 6 s from start to exit for a trivial command.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .cpio import newc_archive

HERE = Path(__file__).resolve().parent
KERNELS_TXT = HERE / "kernels.txt"
CACHE = Path(os.environ.get("CONNSCOPE_STOCK_KERNELS", "/var/cache/connscope/stock-kernels"))
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"

# What the initramfs loads before it can mount the host over virtio-9p and
# lay the overlay (those of them that a kernel builds in are skipped).
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

# Guest-side PID 1. Mounts, runs the command, reports, powers off; every
# path is the guest's. Kept in busybox sh: the host's shell is not there
# until the overlay is mounted.
INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/$m" || echo "connscope guest: insmod $m failed"; done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }
SCRIPT="$(arg connscope.script)"
OUT="$(arg connscope.out)"
P9=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /host /kernel /rw /newroot
mount -t 9p -o "$P9,ro,cache=loose" hostroot /host
mount -t 9p -o "$P9,ro,cache=loose" kernelroot /kernel
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/kernel:/host,upperdir=/rw/upper,workdir=/rw/work /newroot
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts && mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=0755 tmpfs $R/run
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t bpf bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
[ -n "$OUT" ] && mount -t 9p -o "$P9" outdir "$R$OUT"
# The kernel runs its module loader in PID 1's root, this initramfs: send
# it into the guest's root, where the stock kernel's modules are.
printf '#!/bin/busybox sh\nexec chroot /newroot /sbin/modprobe "$@"\n' >/modprobe
chmod 755 /modprobe
echo /modprobe >/proc/sys/kernel/modprobe
ip link set lo up
chroot $R /bin/sh "$SCRIPT" >/dev/ttyS1 2>&1 </dev/null
echo "$?" >/dev/ttyS2
sync
poweroff -f
"""


class GuestUnavailable(Exception):
    """This machine cannot boot the stock kernel: the message says why and the fix."""


@dataclass
class GuestResult:
    status: int | None  # the command's exit status; None when the guest never reported one
    output: str  # the command's stdout and stderr
    console: str  # the kernel's and init's console (for failures)
    seconds: float

    def explain(self) -> str:
        """The exit status, the output's tail, and the console from the
        kernel's first complaint (a warning, an oops, a panic) or its tail."""
        console = self.console
        marks = [console.find(m) for m in ("------------[ cut here", "BUG:", "Oops", "Kernel panic")]
        first = min((i for i in marks if i >= 0), default=-1)
        console = console[first:first + 6000] if first >= 0 else console[-3000:]
        return (f"guest exit status {self.status} after {self.seconds:.0f} s\n--- output (tail) ---\n"
                f"{self.output[-6000:]}\n--- console ---\n{console}")


class StockKernel:
    """One unpacked stock kernel: its image, modules and headers."""

    def __init__(self, release: str):
        self.release = release
        self.root = CACHE / release / "root"
        self.vmlinuz = self.root / "boot" / f"vmlinuz-{release}"
        self._initramfs: Path | None = None

    @staticmethod
    def releases() -> list[str]:
        """The kernels the tier boots (tests/stock_kernel/kernels.txt)."""
        lines = KERNELS_TXT.read_text().splitlines()
        return [ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]

    @classmethod
    def find(cls, release: str) -> "StockKernel":
        """The kernel, ready to boot; GuestUnavailable says what is missing."""
        if os.geteuid() != 0:
            raise GuestUnavailable("needs root (QEMU's 9p share of / and the guest's own root)")
        if shutil.which(QEMU) is None:
            raise GuestUnavailable(f"{QEMU} is missing (fix: scripts/setup-stock-kernels.sh)")
        if not os.access(BUSYBOX, os.X_OK) or "static" not in _file_kind(BUSYBOX):
            raise GuestUnavailable(f"{BUSYBOX} is not busybox-static (fix: scripts/setup-stock-kernels.sh)")
        k = cls(release)
        if not (CACHE / release / ".ready").exists():
            raise GuestUnavailable(f"kernel {release} is not unpacked in {CACHE} (fix: scripts/setup-stock-kernels.sh)")
        return k

    # --- the initramfs ----------------------------------------------------------
    def _module_files(self) -> list[tuple[str, bytes]]:
        """BOOT_MODULES and what they depend on, dependencies first, decompressed
        (busybox's insmod reads no .ko.xz)."""
        moddir = next(d for d in (self.root / "usr/lib/modules" / self.release,
                                  self.root / "lib/modules" / self.release) if d.is_dir())
        deps: dict[str, list[str]] = {}
        for line in (moddir / "modules.dep").read_text().splitlines():
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
        by_name = {_modname(p): p for p in deps}
        order: list[str] = []

        def visit(path: str) -> None:
            if path in order:
                return
            for d in reversed(deps[path]):  # modules.dep lists the deepest last
                visit(d)
            order.append(path)

        for name in BOOT_MODULES:
            if name in by_name:
                visit(by_name[name])
            elif not re.search(rf"/{re.escape(name)}\.ko\b", (moddir / "modules.builtin").read_text()):
                raise GuestUnavailable(f"kernel {self.release} has no module {name}")
        out = []
        for path in order:
            data = (moddir / path).read_bytes()
            if path.endswith(".xz"):
                data = lzma.decompress(data)
            out.append((f"modules/{_modname(path)}.ko", data))
        return out

    def initramfs(self, workdir: Path) -> Path:
        if self._initramfs is None or not self._initramfs.exists():
            mods = self._module_files()
            entries = [("init", INIT.encode(), 0o755), ("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755),
                       ("modules.order", "\n".join(p for p, _ in mods).encode() + b"\n", 0o644)]
            entries += [(p, data, 0o644) for p, data in mods]
            path = workdir / f"initramfs-{self.release}.cpio"
            path.write_bytes(newc_archive(entries))
            self._initramfs = path
        return self._initramfs

    # --- running ------------------------------------------------------------------
    def run(self, script: str, timeout: float, outdir: Path | None = None, memory_mb: int = 2048) -> GuestResult:
        """Boots the kernel, runs `script` (sh) as root in the guest, powers off.

        `outdir`, a host directory, is mounted writable at the same path in the
        guest. The guest is killed after `timeout` seconds (status None)."""
        # /tmp in the guest is the host's, through the overlay: the checkout
        # may live there (CI clones into any folder), so no tmpfs hides it.
        with tempfile.TemporaryDirectory(prefix="connscope-guest-") as tmp:
            work = Path(tmp)
            script_path = work / "command.sh"
            script_path.write_text(script)
            console, output, status = work / "console.log", work / "output.log", work / "status.log"
            cmdline = (f"console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4 random.trust_cpu=on "
                       f"connscope.script={script_path}")
            argv = [QEMU, "-machine", "pc,accel=tcg", "-cpu", "max", "-smp", "1", "-m", str(memory_mb),
                    "-no-reboot", "-nodefaults", "-display", "none", "-nic", "none",
                    "-kernel", str(self.vmlinuz), "-initrd", str(self.initramfs(work)),
                    "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
                    "-virtfs", f"local,path={self.root},mount_tag=kernelroot,security_model=none,readonly=on,"
                               "multidevs=remap",
                    "-serial", f"file:{console}", "-serial", f"file:{output}", "-serial", f"file:{status}"]
            if outdir is not None:
                cmdline += f" connscope.out={outdir}"
                argv += ["-virtfs", f"local,path={outdir},mount_tag=outdir,security_model=none,multidevs=remap"]
            argv += ["-append", cmdline]
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                qemu_out = proc.communicate(timeout=timeout)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                proc.kill()
                qemu_out = proc.communicate()[0].decode(errors="replace") + f"\n(killed after {timeout} s)"
            seconds = time.monotonic() - start
            text = status.read_text().strip() if status.exists() else ""
            return GuestResult(
                status=int(text) if text.isdigit() else None,
                output=_read(output).replace("\r\n", "\n"),
                console=_read(console).replace("\r\n", "\n") + qemu_out,
                seconds=seconds,
            )


def _modname(path: str) -> str:
    return re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", path.rsplit("/", 1)[-1]).replace("-", "_")


def _read(p: Path) -> str:
    return p.read_text(errors="replace") if p.exists() else ""


def _file_kind(path: str) -> str:
    """'static' when the ELF has no program interpreter (no PT_INTERP)."""
    data = Path(path).read_bytes()[:4096]
    return "dynamic" if b"/lib64/ld-linux" in data or b"ld-linux" in data else "static"
