"""The attach table: every hook, its ordered fallbacks, and what it needs.

One row per concern. A hook's methods are tried in order; the first whose
probe passes is compiled in (through -D flags: C is never built from
strings). If the kernel still refuses it at load, the loader marks it
failed and moves to the next. A required hook with no working method stops
the agent; an optional one is reported as missing (and fails --strict).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from ..decode.layout import HOOK_BTF_READ, HOOK_FD_WALK, HOOK_FENTRY, HOOK_KPROBE, HOOK_RAW_TP, HOOK_TRACEPOINT
from . import features, sock_fields
from .features import Probe


@dataclass(frozen=True)
class Method:
    name: str  # short name reported in the start-up record and by check
    target: str  # what it attaches to, for humans
    probe: Callable[[], Probe]
    cflags: dict[str, int] = field(default_factory=dict)
    programs: tuple[str, ...] = ()  # BCC function names, to map load errors back
    # (raw tracepoint, function) pairs the loader attaches itself: BCC's
    # auto-attach takes one function per raw tracepoint.
    backups: tuple[tuple[str, str], ...] = ()
    # What the method cannot give on this kernel though it works ({what: why}):
    # reported with the hook, e.g. a health field this kernel's BTF lacks.
    limits: Callable[[], dict[str, str]] | None = None

    @property
    def covered(self) -> tuple[str, ...]:
        """Programs whose skipped runs cost no record: a main program whose
        skips its backup handles, and the backup itself. The backup runs
        after the main one on each event, so when it is interrupted the main
        one is not running and handles the interrupting event; the event it
        would lose needs three nested levels on one CPU, and TCP changes
        socket state only in tasks and softirqs, which do not nest. (Measured:
        560 skipped backup runs in a saturation run whose summaries matched
        the generator exactly.)"""
        return tuple(p for tp, fn in self.backups for p in (f"raw_tracepoint__{tp}", fn))


@dataclass(frozen=True)
class Hook:
    name: str
    required: bool
    methods: tuple[Method, ...]
    effect_if_missing: str  # what the user loses, said by check


def _each(check: Callable[[str], Probe], names: tuple[str, ...]) -> Callable[[], Probe]:
    """A probe that passes when `check` passes for every name (the first
    failure says why)."""
    def probe() -> Probe:
        for name in names:
            p = check(name)
            if not p:
                return p
        return Probe(True)

    return probe


def _tp(category: str, *names: str) -> Callable[[], Probe]:
    return _each(lambda name: features.tracepoint(category, name), names)




def _tp_method(category: str, *names: str, define: str) -> Method:
    return Method(
        name="tracepoint",
        target=", ".join(f"{category}:{n}" for n in names),
        probe=_tp(category, *names),
        cflags={define: HOOK_TRACEPOINT},
        programs=tuple(f"tracepoint__{category}__{n}" for n in names),
    )


SOCK = ("struct sock *",)  # what most raw programs read: ctx->args[0]


def _raw(names: tuple[str, ...], reads: tuple[str, ...]) -> Callable[[], Probe]:
    def probe() -> Probe:
        found = sock_fields.probe()
        for name in names:
            found = found and sock_fields.args_probe(name, reads) and features.raw_tracepoint(name)
        return found

    return probe


def _raw_method(*names: str, define: str, reads: tuple[str, ...], backup: bool = False) -> Method:
    """The same tracepoints, attached raw. A perf-event tracepoint program
    is skipped while any other one runs on its CPU (the shared
    bpf_prog_active guard: a softirq's state change lost because it
    interrupted a syscall's program); a raw one only while itself runs.
    Its programs read the socket at BTF offsets (sock_fields.py), from the
    arguments `reads` names, which the probe checks against BTF. With
    `backup`, a second program (backup__<name>) handles the runs the kernel
    skips because the first was interrupted on its own CPU (bpf/state.c)."""
    mains = tuple(f"raw_tracepoint__{n}" for n in names)
    backups = tuple((n, f"backup__{n}") for n in names) if backup else ()
    return Method(
        name="raw_tracepoint",
        target=", ".join(f"raw_tp:{n}" + (" (+ backup)" if backup else "") for n in names),
        probe=_raw(names, reads),
        cflags={define: HOOK_RAW_TP},
        programs=mains + tuple(fn for _, fn in backups),
        backups=backups,
    )


def _tp_hook(name: str, required: bool, category: str, *tps: str, define: str, effect: str,
             reads: tuple[str, ...] = SOCK, backup: bool = False, then: tuple[Method, ...] = ()) -> Hook:
    """A hook on sock:/tcp: tracepoints: raw first, the perf-event tracepoint
    after, then `then` (for kernels that lack the tracepoints)."""
    return Hook(name, required, (_raw_method(*tps, define=define, reads=reads, backup=backup),
                                 _tp_method(category, *tps, define=define), *then), effect)


def _fentry_method(*functions: str, define: str) -> Method:
    return Method("fentry", ", ".join(f"fentry:{fn}" for fn in functions), _each(features.fentry, functions),
                  {define: HOOK_FENTRY}, tuple(f"kfunc__vmlinux__{fn}" for fn in functions))


def _with_probe(m: Method, also: Callable[[], Probe]) -> Method:
    """The method, needing `also` to pass too (BTF offsets its C reads)."""
    return replace(m, probe=lambda: m.probe() and also())


def _kprobe_method(*functions: str, define: str) -> Method:
    return Method("kprobe", ", ".join(f"kprobe:{fn}" for fn in functions), features.kprobes,
                  {define: HOOK_KPROBE}, tuple(f"kprobe__{fn}" for fn in functions))


HOOKS: tuple[Hook, ...] = (
    # The connect start: the task that connects, and when. fentry is the
    # cheapest and needs BTF + trampolines (5.5+); kprobe needs
    # CONFIG_KPROBES; the SYN_SENT transition of inet_sock_set_state (4.16+)
    # fires in the connecting task too and needs neither.
    Hook(
        "tcp_connect",
        required=True,
        methods=(
            _fentry_method("tcp_connect", define="CONNECT_HOOK"),
            _kprobe_method("tcp_connect", define="CONNECT_HOOK"),
            # Its code runs inside the lifecycle hook's program, whichever
            # method that has, so a load failure there is lifecycle's.
            Method("tracepoint", "inet_sock_set_state CLOSE->SYN_SENT (in the lifecycle program)",
                   _tp("sock", "inet_sock_set_state"), {"CONNECT_HOOK": HOOK_TRACEPOINT}),
        ),
        effect_if_missing="no connection records at all",
    ),
    _tp_hook("lifecycle", True, "sock", "inet_sock_set_state", define="HAVE_LIFECYCLE",
             effect="no connection records at all", reads=("struct sock *", "int", "int"),
             # the busiest program, and the one that runs both in tasks and
             # in softirqs: measured, it alone was skipped in bursts
             backup=True),
    _tp_hook("error_report", True, "sock", "inet_sk_error_report", define="HAVE_ERROR_REPORT",
             effect="failed connects and closes lose their errno"),
    _tp_hook("destroy", True, "tcp", "tcp_destroy_sock", define="HAVE_DESTROY",
             effect="closes without an error are never emitted",
             # runs in tasks (close()) and in softirqs (TIME_WAIT's end, a
             # reset): measured, the one program still skipped at saturation
             backup=True),
    # syscalls: tracepoints have no raw twin of their own (only
    # raw_syscalls:sys_enter, for every syscall); they run in process
    # context, where nothing of ours can be interrupted into skipping them.
    Hook("connect_syscall", False,
         (_tp_method("syscalls", "sys_enter_connect", "sys_exit_connect", define="HAVE_CONNECT_SYSCALL"),),
         "EADDRNOTAVAIL and failures before TCP (ENETUNREACH, EACCES) are not reported"),
    # Needs connect_syscall too (which fd a connect in progress has).
    Hook("so_error_syscall", False,
         (_tp_method("syscalls", "sys_enter_getsockopt", "sys_exit_getsockopt", define="HAVE_SO_ERROR_SYSCALL"),),
         "a connect whose soft error (an ICMP answer during connect()) the application read with "
         "getsockopt(SO_ERROR) before closing shows as ABORTED"),
    # Which fd is a TCP socket, for a connect that fails before TCP sees it.
    # Reading the fd's socket when such a connect fails costs nothing per
    # connection; tracking every socket(2) call cost about 0.7 us per
    # connection (bench/bpfcost.py) and misses sockets made before the agent.
    Hook("socket_syscall", False,
         (Method("fd_walk", "the failed connect's fd, read at sys_exit_connect (BTF offsets)",
                 sock_fields.fd_walk_probe, {"HAVE_SOCKET_SYSCALL": HOOK_FD_WALK}),
          _tp_method("syscalls", "sys_enter_socket", "sys_exit_socket", define="HAVE_SOCKET_SYSCALL")),
         "failures before TCP (ENETUNREACH, EACCES) are not reported"),
    _tp_hook("retransmit", False, "tcp", "tcp_retransmit_skb", define="HAVE_RETRANSMIT",
             effect="syn_retransmits and retransmits stay 0"),
    # SYN-ACK retransmits are rare and timer-driven: the record's tuple
    # (from the request socket) is all that is read, so the tracepoint stays.
    Hook("synack_retransmit", False,
         (_tp_method("tcp", "tcp_retransmit_synack", define="HAVE_SYNACK_RETRANSMIT"),),
         "synack_retransmits stays 0"),
    _tp_hook("reset_sent", False, "tcp", "tcp_send_reset", define="HAVE_RESET_SENT",
             effect="resets_sent stays 0"),
    _tp_hook("reset_received", False, "tcp", "tcp_receive_reset", define="HAVE_RESET_RECEIVED",
             effect="resets_received stays 0 and peer resets show as closed_by local"),
    # The I/O tracepoints came with 6.3 (Debian's 6.1 has neither); before
    # them, the entries of tcp_sendmsg and tcp_recvmsg, the functions that
    # fire them, run in the same task for the same socket.
    _tp_hook("first_io", False, "sock", "sock_send_length", "sock_recv_length", define="HAVE_FIRST_IO",
             effect="inbound connections keep the listener's owner as their pid",
             then=(_fentry_method("tcp_sendmsg", "tcp_recvmsg", define="HAVE_FIRST_IO"),
                   _kprobe_method("tcp_sendmsg", "tcp_recvmsg", define="HAVE_FIRST_IO"))),
    # Small writes Nagle's algorithm holds: every write of a socket passes
    # here (one BTF read when TCP_NODELAY is set, four more for a small one).
    # The tracepoint came with 6.6; before it, the function's entry.
    Hook("nagle", False,
         (Method("raw_tracepoint", "raw_tp:tcp_sendmsg_locked",
                 lambda: (sock_fields.nagle_probe(raw=True)
                          and sock_fields.args_probe("tcp_sendmsg_locked", ("struct sock *", "struct msghdr *"))
                          and features.raw_tracepoint("tcp_sendmsg_locked")),
                 {"HAVE_NAGLE": HOOK_RAW_TP}, ("raw_tracepoint__tcp_sendmsg_locked",)),
          _with_probe(_fentry_method("tcp_sendmsg_locked", define="HAVE_NAGLE"), sock_fields.nagle_probe),
          _with_probe(_kprobe_method("tcp_sendmsg_locked", define="HAVE_NAGLE"), sock_fields.nagle_probe)),
         "no nagle_delay diagnosis (nagle_holds stays 0)"),
    # Not an attach point but chosen the same way: reads of a closing
    # socket's tcp_sock inside the lifecycle program, at BTF offsets.
    Hook("socket_health", False,
         (Method("btf_offsets", "tcp_sock at CLOSE (in the lifecycle program), offsets from kernel BTF",
                 sock_fields.health_probe, {"HAVE_SOCK_HEALTH": HOOK_BTF_READ},
                 limits=sock_fields.health_unread),),
         "close records carry no bytes, RTT, MSS, keepalive or nodelay (null)"),
    # Not an attach point but chosen the same way: the ring buffer (5.8+)
    # keeps order across CPUs and has one counted drop point; the perf
    # buffer works everywhere.
    Hook(
        "event_buffer",
        required=True,
        methods=(
            Method("ringbuf", "BPF ring buffer", features.ringbuf, {"USE_RINGBUF": 1}),
            Method("perf", "perf event buffer", lambda: Probe(True), {"USE_RINGBUF": 0}),
        ),
        effect_if_missing="no records can leave the kernel",
    ),
)

# C sources in compile order: maps.c defines the maps and helpers the others use,
# sockread.c reads sockets and tracepoint records, health.c a closing
# socket's bytes, RTT and options, aggregate.c counts, emit.c
# sends a record and holds the per-socket lifecycle helpers, then one file per
# concern.
SOURCES = ("maps.c", "sockread.c", "health.c", "aggregate.c", "emit.c", "listen.c", "state.c", "errors.c", "syscalls.c", "retransmit.c", "reset.c", "io.c",
           "nagle.c")


def hook(name: str) -> Hook:
    for h in HOOKS:
        if h.name == name:
            return h
    raise KeyError(name)


# Leaves an optional hook out (its cost, e.g. nagle's per write on a busy proxy):
# `--force-hook nagle=off`. A required hook cannot be turned off.
OFF = "off"


def _choices(h: Hook) -> list[str]:
    return [m.name for m in h.methods] + ([] if h.required else [OFF])


def force_choices() -> str:
    """What --force-hook / agent.force_hooks accept, for error messages."""
    return "; ".join(f"{h.name}={'|'.join(_choices(h))}" for h in HOOKS if len(_choices(h)) > 1)


def parse_force(pairs) -> dict[str, str]:
    """HOOK=METHOD pairs -> {hook: method}; ValueError(the pair) for one naming no
    hook's method (or `off` for a required hook)."""
    out = {}
    for pair in pairs:
        name, sep, method = pair.partition("=")
        if not sep or method not in [c for h in HOOKS if h.name == name for c in _choices(h)]:
            raise ValueError(pair)
        out[name] = method
    return out
