"""The attach table: every hook, its ordered fallbacks, and what it needs.

One row per concern. A hook's methods are tried in order; the first whose
probe passes is compiled in (through -D flags: C is never built from
strings). If the kernel still refuses it at load, the loader marks it
failed and moves to the next. A required hook with no working method stops
the agent; an optional one is reported as missing (and fails --strict).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import features
from .features import Probe


@dataclass(frozen=True)
class Method:
    name: str  # short name reported in the start-up record and by check
    target: str  # what it attaches to, for humans
    probe: Callable[[], Probe]
    cflags: dict[str, int] = field(default_factory=dict)
    programs: tuple[str, ...] = ()  # BCC function names, to map load errors back


@dataclass(frozen=True)
class Hook:
    name: str
    required: bool
    methods: tuple[Method, ...]
    effect_if_missing: str  # what the user loses, said by check


def _tp(category: str, *names: str) -> Callable[[], Probe]:
    def probe() -> Probe:
        for name in names:
            p = features.tracepoint(category, name)
            if not p:
                return p
        return Probe(True)

    return probe


def _tp_method(category: str, *names: str, define: str) -> Method:
    return Method(
        name="tracepoint",
        target=", ".join(f"{category}:{n}" for n in names),
        probe=_tp(category, *names),
        cflags={define: 1},
        programs=tuple(f"tracepoint__{category}__{n}" for n in names),
    )


HOOKS: tuple[Hook, ...] = (
    # The connect start: the task that connects, and when. fentry is the
    # cheapest and needs BTF + trampolines (5.5+); kprobe needs
    # CONFIG_KPROBES; the SYN_SENT transition of inet_sock_set_state (4.16+)
    # fires in the connecting task too and needs neither.
    Hook(
        "tcp_connect",
        required=True,
        methods=(
            Method("fentry", "fentry:tcp_connect", lambda: features.fentry("tcp_connect"),
                   {"CONNECT_HOOK": 1}, ("kfunc__vmlinux__tcp_connect",)),
            Method("kprobe", "kprobe:tcp_connect", features.kprobes,
                   {"CONNECT_HOOK": 2}, ("kprobe__tcp_connect",)),
            Method("tracepoint", "sock:inet_sock_set_state (CLOSE->SYN_SENT)",
                   _tp("sock", "inet_sock_set_state"), {"CONNECT_HOOK": 3},
                   ("tracepoint__sock__inet_sock_set_state",)),
        ),
        effect_if_missing="no connection records at all",
    ),
    Hook("lifecycle", True, (_tp_method("sock", "inet_sock_set_state", define="HAVE_LIFECYCLE"),),
         "no connection records at all"),
    Hook("error_report", True, (_tp_method("sock", "inet_sk_error_report", define="HAVE_ERROR_REPORT"),),
         "failed connects and closes lose their errno"),
    Hook("destroy", True, (_tp_method("tcp", "tcp_destroy_sock", define="HAVE_DESTROY"),),
         "closes without an error are never emitted"),
    Hook("connect_syscall", False,
         (_tp_method("syscalls", "sys_enter_connect", "sys_exit_connect", define="HAVE_CONNECT_SYSCALL"),),
         "EADDRNOTAVAIL and failures before TCP (ENETUNREACH, EACCES) are not reported"),
    Hook("socket_syscall", False,
         (_tp_method("syscalls", "sys_enter_socket", "sys_exit_socket", define="HAVE_SOCKET_SYSCALL"),),
         "failures before TCP (ENETUNREACH, EACCES) are not reported"),
    Hook("retransmit", False, (_tp_method("tcp", "tcp_retransmit_skb", define="HAVE_RETRANSMIT"),),
         "syn_retransmits and retransmits stay 0"),
    Hook("synack_retransmit", False,
         (_tp_method("tcp", "tcp_retransmit_synack", define="HAVE_SYNACK_RETRANSMIT"),),
         "synack_retransmits stays 0"),
    Hook("reset_sent", False, (_tp_method("tcp", "tcp_send_reset", define="HAVE_RESET_SENT"),),
         "resets_sent stays 0"),
    Hook("reset_received", False, (_tp_method("tcp", "tcp_receive_reset", define="HAVE_RESET_RECEIVED"),),
         "resets_received stays 0 and peer resets show as closed_by local"),
    Hook("first_io", False,
         (_tp_method("sock", "sock_send_length", "sock_recv_length", define="HAVE_FIRST_IO"),),
         "inbound connections keep the listener's owner as their pid"),
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

# C sources in compile order: maps.c defines what the others use.
SOURCES = ("maps.c", "listen.c", "state.c", "errors.c", "syscalls.c", "retransmit.c", "reset.c", "io.c")


def hook(name: str) -> Hook:
    for h in HOOKS:
        if h.name == name:
            return h
    raise KeyError(name)


def force_choices() -> str:
    """What --force-hook / agent.force_hooks accept, for error messages."""
    return "; ".join(f"{h.name}={'|'.join(m.name for m in h.methods)}" for h in HOOKS if len(h.methods) > 1)


def parse_force(pairs) -> dict[str, str]:
    """HOOK=METHOD pairs -> {hook: method}; ValueError(the pair) for one naming no hook's method."""
    out = {}
    for pair in pairs:
        name, sep, method = pair.partition("=")
        if not sep or method not in [m.name for h in HOOKS if h.name == name for m in h.methods]:
            raise ValueError(pair)
        out[name] = method
    return out
