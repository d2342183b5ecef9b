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


# A closing connection's health (bpf/health.c): each -D on its own, so a
# field this kernel's BTF lacks leaves only the record fields that need it
# null. Each entry lists alternative member paths, first match wins: 6.1
# keeps sk_flags in struct sock, later kernels in sock_common (skc_flags).
# tcp_sock starts with inet_connection_sock, inet_sock and sock, so its
# offsets are from the socket's address too.
HEALTH: dict[str, tuple[tuple[tuple[str, str], ...], ...]] = {
    "OFF_TP_BYTES_ACKED": ((("tcp_sock", "bytes_acked"),),),
    "OFF_TP_BYTES_RECEIVED": ((("tcp_sock", "bytes_received"),),),
    "OFF_TP_SND_UNA": ((("tcp_sock", "snd_una"),),),
    "OFF_TP_SND_NXT": ((("tcp_sock", "snd_nxt"),),),
    "OFF_TP_SND_SML": ((("tcp_sock", "snd_sml"),),),
    # what is left of a write at the raw tcp_sendmsg_locked tracepoint (bpf/nagle.c)
    "OFF_MSG_ITER_COUNT": ((("msghdr", "msg_iter"), ("iov_iter", "count")),),
    "OFF_TP_WRITE_SEQ": ((("tcp_sock", "write_seq"),),),
    "OFF_TP_SRTT_US": ((("tcp_sock", "srtt_us"),),),
    # struct minmax rtt_min: s[0].v is the current minimum (win_minmax.h)
    "OFF_TP_RTT_MIN": ((("tcp_sock", "rtt_min"), ("minmax", "s"), ("minmax_sample", "v")),),
    "OFF_TP_MSS_CACHE": ((("tcp_sock", "mss_cache"),),),
    "OFF_TP_KEEPALIVE_TIME": ((("tcp_sock", "keepalive_time"),),),
    "OFF_SK_FLAGS": ((("sock", "sk_flags"),), (("sock", "__sk_common"), ("sock_common", "skc_flags"))),
}

# The -D values each health field of a close record needs.
HEALTH_NEEDS: dict[str, tuple[str, ...]] = {
    "bytes_sent": ("OFF_TP_BYTES_ACKED", "OFF_TP_SND_UNA", "OFF_TP_WRITE_SEQ"),
    "bytes_received": ("OFF_TP_BYTES_RECEIVED", "OFF_SK_FLAGS", "SK_FLAG_DONE"),
    "srtt_us": ("OFF_TP_SRTT_US",),
    "min_rtt_us": ("OFF_TP_RTT_MIN",),
    "mss": ("OFF_TP_MSS_CACHE",),
    "keepalive": ("OFF_SK_FLAGS", "SK_FLAG_KEEPOPEN"),
    "keepalive_idle_s": ("OFF_TP_KEEPALIVE_TIME", "HZ"),
    "nodelay": ("OFF_TP_NONAGLE", "NONAGLE_SHIFT"),
}


@cache
def health() -> tuple[dict[str, int], dict[str, str]]:
    """The health reads' -D values this kernel's BTF gives, and why each
    missing one is missing ({-D name: reason})."""
    found: dict[str, int] = {}
    missing: dict[str, str] = {}
    try:
        btf = BTF.vmlinux()
    except BTFError as err:
        return {}, {name: str(err) for needs in HEALTH_NEEDS.values() for name in needs}
    for name, paths in HEALTH.items():
        errors = []
        for path in paths:
            try:
                found[name] = sum(btf.member_offset(s, m) for s, m in path)
                break
            except BTFError as err:
                errors.append(str(err))
        else:
            missing[name] = "; ".join(errors)
    for name, flag in (("SK_FLAG_DONE", "SOCK_DONE"), ("SK_FLAG_KEEPOPEN", "SOCK_KEEPOPEN")):
        try:
            found[name] = btf.enum_value("sock_flags", flag)
        except BTFError as err:
            missing[name] = str(err)
    try:
        bit, width = btf.member_bitfield("tcp_sock", "nonagle")
        if bit % 8 + width > 8:
            raise BTFError(f"tcp_sock.nonagle spans two bytes (bit {bit}, {width} wide)")
        found["OFF_TP_NONAGLE"], found["NONAGLE_SHIFT"] = bit // 8, bit % 8
    except BTFError as err:
        missing["OFF_TP_NONAGLE"] = missing["NONAGLE_SHIFT"] = str(err)
    from ..procfs import kernel_hz  # the only non-BTF value: keepalive_time is in jiffies

    hz = kernel_hz()
    if hz:
        found["HZ"] = hz
    else:
        missing["HZ"] = "the kernel's HZ is unknown (no /proc/config.gz or /boot/config-$(uname -r))"
    return found, missing


def health_unread() -> dict[str, str]:
    """{close record field: why it is null} for the health fields this kernel's BTF cannot give."""
    _found, missing = health()
    out = {}
    for field, needs in HEALTH_NEEDS.items():
        why = [f"{n}: {missing[n]}" for n in needs if n in missing]
        if why:
            out[field] = "; ".join(why)
    return out


# What bpf/nagle.c reads of a socket; its raw tracepoint also OFF_MSG_ITER_COUNT.
NAGLE_NEEDS = ("OFF_TP_NONAGLE", "NONAGLE_SHIFT", "OFF_TP_MSS_CACHE", "OFF_TP_SND_SML", "OFF_TP_SND_UNA",
               "OFF_TP_SND_NXT")


def nagle_probe(raw: bool = False) -> Probe:
    missing = health()[1]
    why = [f"{n}: {missing[n]}" for n in NAGLE_NEEDS + (("OFF_MSG_ITER_COUNT",) if raw else ()) if n in missing]
    return Probe(False, "tcp_sock fields not in kernel BTF: " + "; ".join(why)) if why else Probe(True)


def health_probe() -> Probe:
    if len(health_unread()) == len(HEALTH_NEEDS):
        return Probe(False, "no socket health field in kernel BTF: " + "; ".join(sorted(set(health()[1].values()))))
    return Probe(True)


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
    found, _missing = health()
    out.update({k: v for k, v in found.items() if k != "HZ"})
    return out
