"""Capability checks before touching bpf(2): a missing privilege becomes one
line naming the capability, what it is for and the fix (OS errors turned
into domain errors at the boundary, as psutil does).

Measured here as an unprivileged user under setpriv, removing one capability
at a time (README "Running as a service"; tests/service prove it):

- CAP_BPF: bpf(2) map creation and program load. Without it BCC fails with
  "could not open bpf map: events, error: Operation not permitted".
- CAP_PERFMON: loading tracing program types, perf_event_open(2) to attach
  them. Without it the load fails (EPERM) and BCC says "Need super-user
  privileges to run".
- CAP_DAC_READ_SEARCH: /sys/kernel/tracing is mode 0700 root; BCC reads the
  tracepoint format and id files there. Without it no tracepoint can attach.
- CAP_SYS_PTRACE (optional): /proc/<pid>/fd and /proc/<pid>/ns/net of other
  users' processes (owners of listeners older than the agent) and
  /proc/<pid>/exe. Without it such accepts get pid_source "unknown".
- CAP_SYS_ADMIN (optional): setns(2) into a process's network namespace to
  count its TIME_WAIT sockets (port_exhaustion_risk). Near root; off by default.

Not needed (same experiment): CAP_SYS_RESOURCE (BPF memory is charged to
the memory cgroup since 5.11; RLIMIT_MEMLOCK 0 works), CAP_NET_ADMIN
(sock_diag dumps of the own namespace are unprivileged), CAP_SYS_ADMIN for
bpf_prog_info (recursion_misses of our own programs).
"""

from __future__ import annotations

import os

from ..errors import PrivilegeError

CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 2, 19, 21, 38, 39

NEEDED = {
    CAP_BPF: ("CAP_BPF", "creating maps and loading programs"),
    CAP_PERFMON: ("CAP_PERFMON", "loading tracing programs and attaching them"),
    CAP_DAC_READ_SEARCH: ("CAP_DAC_READ_SEARCH", "reading tracepoint formats in /sys/kernel/tracing"),
}
OPTIONAL = {
    CAP_SYS_PTRACE: ("CAP_SYS_PTRACE", "owners of other users' listeners older than the agent, and exe paths"),
    CAP_SYS_ADMIN: ("CAP_SYS_ADMIN", "TIME_WAIT counts inside other network namespaces "
                                     "(port_exhaustion_risk for containers)"),
}
GRANT = "CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH"


def effective_caps() -> int:
    """This process's effective capability mask (CapEff of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _has(caps: int, bit: int) -> bool:
    return bool(caps & (1 << bit))


def missing_caps(caps: int | None = None) -> list[str]:
    """Names of the capabilities the agent cannot start without, that it lacks."""
    caps = effective_caps() if caps is None else caps
    # before 5.8 there was no CAP_BPF/CAP_PERFMON: CAP_SYS_ADMIN stands for both
    if _has(caps, CAP_SYS_ADMIN) and _has(caps, CAP_DAC_READ_SEARCH):
        return []
    return [name for bit, (name, _why) in NEEDED.items() if not _has(caps, bit)]


def degraded_caps(caps: int | None = None) -> list[tuple[str, str]]:
    """(name, what is lost) for each optional capability this process lacks."""
    caps = effective_caps() if caps is None else caps
    return [(name, lost) for bit, (name, lost) in OPTIONAL.items() if not _has(caps, bit)]


def require_bpf() -> None:
    """Raises PrivilegeError (one line: which capability, for what, the fix) unless the agent can load."""
    missing = missing_caps()
    if missing:
        who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        needs = {name: why for name, why in NEEDED.values()}
        what = "; ".join(f"{name} ({needs[name]})" for name in missing)
        raise PrivilegeError(
            f"running as {who} without {what}: cannot load eBPF programs",
            f"run as root (sudo), or grant {GRANT} as systemd/connscope.service does with AmbientCapabilities=",
        )
