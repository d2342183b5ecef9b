"""Where this kernel keeps the socket fields the raw tracepoint programs read.

A raw tracepoint hands its programs the tracepoint's C arguments (a
struct sock *, states), not the record the perf-event tracepoint fills
from them, so the programs read the fields themselves. Their offsets come
from the running kernel's BTF at load time and reach the C as -D integers:
the Debian 6.1 headers BCC compiles against lay these structs out
differently from 6.18 (KERNEL-FACTS.md). The fields are the ones the
tracepoints' TP_fast_assign reads (include/trace/events/sock.h, tcp.h).
"""

from __future__ import annotations

from functools import cache

from .btf import BTF, BTFError
from .features import Probe

# -D name: the members from the outer struct in, each (struct, member).
FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "OFF_SK_DADDR": (("sock", "__sk_common"), ("sock_common", "skc_daddr")),
    "OFF_SK_DPORT": (("sock", "__sk_common"), ("sock_common", "skc_dport")),
    "OFF_SK_FAMILY": (("sock", "__sk_common"), ("sock_common", "skc_family")),
    "OFF_SK_STATE": (("sock", "__sk_common"), ("sock_common", "skc_state")),
    "OFF_SK_V6_DADDR": (("sock", "__sk_common"), ("sock_common", "skc_v6_daddr")),
    "OFF_SK_V6_RCV_SADDR": (("sock", "__sk_common"), ("sock_common", "skc_v6_rcv_saddr")),
    "OFF_SK_PROTOCOL": (("sock", "sk_protocol"),),
    "OFF_SK_ERR": (("sock", "sk_err"),),
    "OFF_INET_SADDR": (("inet_sock", "inet_saddr"),),
    "OFF_INET_SPORT": (("inet_sock", "inet_sport"),),
}


# The walk from the current task to the socket behind one of its fds
# (bpf/syscalls.c, fd_is_tcp): only on a failed connect, instead of
# tracking every socket(2) call.
FD_WALK: dict[str, tuple[tuple[str, str], ...]] = {
    "OFF_TASK_FILES": (("task_struct", "files"),),
    "OFF_FILES_FDT": (("files_struct", "fdt"),),
    "OFF_FDT_MAX_FDS": (("fdtable", "max_fds"),),
    "OFF_FDT_FD": (("fdtable", "fd"),),
    "OFF_FILE_PRIVATE_DATA": (("file", "private_data"),),
    "OFF_SOCKET_SK": (("socket", "sk"),),
    "OFF_SK_TYPE": (("sock", "sk_type"),),
}


def _resolve(fields: dict[str, tuple[tuple[str, str], ...]]) -> dict[str, int]:
    """{-D name: byte offset} of each member path; BTFError when BTF lacks one."""
    btf = BTF.vmlinux()
    return {name: sum(btf.member_offset(s, m) for s, m in path) for name, path in fields.items()}


@cache
def fd_walk_offsets() -> dict[str, int]:
    """The fd walk's offsets; BTFError when BTF lacks one."""
    return _resolve(FD_WALK)


def fd_walk_probe() -> Probe:
    try:
        fd_walk_offsets()
        offsets()
    except BTFError as err:
        return Probe(False, f"fd-to-socket offsets not in kernel BTF: {err}")
    return Probe(True)


@cache
def offsets() -> dict[str, int]:
    """The socket fields' offsets; BTFError when the kernel's BTF lacks one."""
    return _resolve(FIELDS)


def probe() -> Probe:
    try:
        offsets()
    except BTFError as err:
        return Probe(False, f"socket field offsets not in kernel BTF: {err}")
    return Probe(True)


@cache
def args_probe(tracepoint: str, reads: tuple[str, ...]) -> Probe:
    """Whether the raw tracepoint's arguments start with what its program
    reads (ctx->args[i]): a kernel that changed the prototype falls back."""
    try:
        args = BTF.vmlinux().raw_tracepoint_args(tracepoint)
    except BTFError as err:
        return Probe(False, str(err))
    if tuple(args[: len(reads)]) != reads:
        return Probe(False, f"raw tracepoint {tracepoint} passes ({', '.join(args)}), not ({', '.join(reads)})")
    return Probe(True)


def cflags() -> dict[str, int]:
    """The offsets as -D values, or none (the programs that read them are then not built)."""
    out: dict[str, int] = {}
    for group in (offsets, fd_walk_offsets):
        try:
            out.update(group())
        except BTFError:
            pass
    return out
