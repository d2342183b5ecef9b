"""Feature probes: ask the kernel what works, never a version string.

Each probe returns a Probe(ok, reason). The bpf(2) probes issue the real
commands (load and attach a two-instruction fentry program, create a ring
buffer map) because on this kernel family the cheap signs lie: BCC's
support_kfunc() says yes where fentry attach is refused with EPERM.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from functools import cache

from .btf import BTF, BTFError, KIND_FUNC

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

_SYS_bpf = 321  # x86_64
_BPF_MAP_CREATE, _BPF_PROG_LOAD, _BPF_RAW_TRACEPOINT_OPEN = 0, 5, 17
_BPF_MAP_TYPE_RINGBUF = 27
_BPF_PROG_TYPE_RAW_TRACEPOINT = 17
_BPF_PROG_TYPE_TRACING = 26
_BPF_TRACE_FENTRY = 24
# r0 = 0; exit
_RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class Probe:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _bpf(cmd: int, attr: bytearray) -> tuple[int, int]:
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    fd = _libc.syscall(_SYS_bpf, cmd, buf, len(attr))
    return fd, (ctypes.get_errno() if fd < 0 else 0)


def _errname(e: int) -> str:
    return f"{errno.errorcode.get(e, str(e))}"


@cache
def tracefs() -> str | None:
    """The mounted tracefs with event ids, or None."""
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events", "sock")):
            return d
    return None


def tracepoint(category: str, name: str) -> Probe:
    root = tracefs()
    if root is None:
        return Probe(False, "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
    if os.path.exists(os.path.join(root, "events", category, name, "id")):
        return Probe(True)
    return Probe(False, f"kernel has no tracepoint {category}:{name}")


@cache
def ringbuf() -> Probe:
    attr = bytearray(72)
    struct.pack_into("<IIII", attr, 0, _BPF_MAP_TYPE_RINGBUF, 0, 0, os.sysconf("SC_PAGE_SIZE"))
    fd, err = _bpf(_BPF_MAP_CREATE, attr)
    if fd < 0:
        return Probe(False, f"BPF ring buffer map refused: {_errname(err)}")
    os.close(fd)
    return Probe(True)


def _load_return_zero(prog_type: int, attach_type: int = 0, attach_btf_id: int = 0) -> tuple[int, int]:
    """BPF_PROG_LOAD of `r0 = 0; exit`: (fd, 0) or (-1, errno)."""
    insns = ctypes.create_string_buffer(_RETURN_ZERO, len(_RETURN_ZERO))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = bytearray(128)
    struct.pack_into("<IIQQ", attr, 0, prog_type, 2, ctypes.addressof(insns), ctypes.addressof(lic))
    struct.pack_into("<16s", attr, 48, b"cs_probe")
    struct.pack_into("<I", attr, 68, attach_type)
    struct.pack_into("<I", attr, 108, attach_btf_id)
    return _bpf(_BPF_PROG_LOAD, attr)


@cache
def fentry(function: str) -> Probe:
    """Loads and attaches an empty fentry program on ``function``."""
    try:
        target = BTF.vmlinux().find(KIND_FUNC, function)
    except BTFError as err:
        return Probe(False, f"no kernel BTF: {err}")
    if target is None:
        return Probe(False, f"{function} is not in kernel BTF")
    prog, err = _load_return_zero(_BPF_PROG_TYPE_TRACING, _BPF_TRACE_FENTRY, target.type_id)
    if prog < 0:
        return Probe(False, f"fentry program load refused: {_errname(err)}")
    try:
        attach = bytearray(16)
        struct.pack_into("<QI", attach, 0, 0, prog)
        link, err = _bpf(_BPF_RAW_TRACEPOINT_OPEN, attach)
        if link < 0:
            return Probe(False, f"fentry attach refused: {_errname(err)}")
        os.close(link)
        return Probe(True)
    finally:
        os.close(prog)


@cache
def raw_tracepoint(name: str) -> Probe:
    """Loads an empty raw tracepoint program and attaches it to ``name``."""
    prog, err = _load_return_zero(_BPF_PROG_TYPE_RAW_TRACEPOINT)
    if prog < 0:
        return Probe(False, f"raw tracepoint program load refused: {_errname(err)}")
    try:
        os.close(attach_raw_tracepoint(prog, name))
        return Probe(True)
    except OSError as e:
        return Probe(False, f"raw tracepoint {name} attach refused: {_errname(e.errno)}")
    finally:
        os.close(prog)


def attach_raw_tracepoint(prog_fd: int, name: str) -> int:
    """BPF_RAW_TRACEPOINT_OPEN: the link's fd (closing it detaches). BCC's
    attach_raw_tracepoint() takes one program per tracepoint; this does not."""
    tp = ctypes.create_string_buffer(name.encode())
    attach = bytearray(16)
    struct.pack_into("<QI", attach, 0, ctypes.addressof(tp), prog_fd)
    link, err = _bpf(_BPF_RAW_TRACEPOINT_OPEN, attach)
    if link < 0:
        raise OSError(err, f"raw tracepoint {name} attach refused: {_errname(err)}")
    return link


@cache
def kprobes() -> Probe:
    root = tracefs()
    if os.path.exists("/sys/bus/event_source/devices/kprobe/type"):
        return Probe(True)
    if root and os.path.exists(os.path.join(root, "kprobe_events")):
        return Probe(True)
    return Probe(False, "kernel has no kprobes (CONFIG_KPROBES off)")


@cache
def kernel_btf() -> Probe:
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        return Probe(True)
    return Probe(False, "kernel has no BTF (/sys/kernel/btf/vmlinux missing)")


_BPF_OBJ_GET_INFO_BY_FD = 15
# struct bpf_prog_info (UAPI, append-only): name[16] at 64, recursion_misses
# at 208 (added in 5.12; a shorter info from an older kernel reads as 0).
_PROG_INFO_LEN = 224
_PROG_INFO_NAME, _PROG_INFO_RECURSION_MISSES = 64, 208


def prog_recursion_misses(prog_fd: int) -> int:
    """How often the kernel skipped this program because another BPF
    program was already running on the CPU (bpf_prog_active guard)."""
    info = bytearray(_PROG_INFO_LEN)
    ibuf = (ctypes.c_char * len(info)).from_buffer(info)
    attr = bytearray(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(ibuf))
    rc, err = _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)
    if rc < 0:
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD: {_errname(err)}")
    return struct.unpack_from("<Q", info, _PROG_INFO_RECURSION_MISSES)[0]
