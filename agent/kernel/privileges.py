"""Capability checks before touching bpf(2): a missing privilege becomes one
line naming the capabilities (OS errors turned into domain errors at the
boundary, as psutil does)."""

from __future__ import annotations

import os

from ..errors import PrivilegeError

CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 2, 21, 38, 39
# Measured here (KERNEL-FACTS.md): BCC compiles, loads and attaches
# tracepoint programs with exactly these three; without DAC_READ_SEARCH it
# cannot read the tracepoint format files it generates structs from.
NEEDED = {CAP_BPF: "CAP_BPF", CAP_PERFMON: "CAP_PERFMON", CAP_DAC_READ_SEARCH: "CAP_DAC_READ_SEARCH"}


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_caps() -> list[str]:
    caps = effective_caps()
    if caps & (1 << CAP_SYS_ADMIN) and caps & (1 << CAP_DAC_READ_SEARCH):
        return []
    return [name for bit, name in NEEDED.items() if not caps & (1 << bit)]


def require_bpf() -> None:
    missing = missing_caps()
    if missing:
        who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        raise PrivilegeError(
            f"running as {who} without {', '.join(missing)}: cannot load eBPF programs",
            "run as root (sudo), or grant CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH",
        )
