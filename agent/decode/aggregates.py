"""The kernel's window counts (bpf/aggregate.c) as typed rows.

One KernelRow per (process, destination, direction), its per-CPU counts
summed (the handshake maximum is the largest), and its histogram bins as
DDSketch keys -> counts (see ddbins.py: handshake time, lifetime, RTT at
close), and failures and the errors that
ended established connections as errno -> count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import layout as L
from .text import addr_text, comm_text


@dataclass
class KernelRow:
    pid: int
    comm: str
    cgroup_id: int
    family: int
    direction: int
    daddr: str  # "*" for inbound: the row is the local listening port
    port: int
    counts: dict[str, int]
    latency: dict[int, int] = field(default_factory=dict)  # DDSketch key (us) -> n
    lifetime: dict[int, int] = field(default_factory=dict)
    failures: dict[int, int] = field(default_factory=dict)  # errno (0: abandoned) -> n
    close_errors: dict[int, int] = field(default_factory=dict)  # errno of established connections that failed -> n
    rtt: dict[int, int] = field(default_factory=dict)  # DDSketch key of closing connections' smoothed RTT (us) -> n

    @property
    def proc(self) -> tuple[int, str, int]:
        return self.pid, self.comm, self.cgroup_id

    @property
    def dest(self) -> tuple[str, int, str]:
        return self.daddr, self.port, "inbound" if self.direction == L.DIR_INBOUND else "outbound"


# Counts that are a largest value, not a sum: over CPUs too.
_MAX_FIELDS = ("latency_max_ns", "failure_wait_max_ns")


def rows(raw_rows, raw_bins) -> list[KernelRow]:
    """From AggMaps.take()'s ([(AggKey, [AggCounts per CPU])], [(AggBinKey, n)])."""
    out: dict[bytes, KernelRow] = {}
    for key, per_cpu in raw_rows:
        counts = {name: sum(getattr(c, name) for c in per_cpu) for name in L.AGG_COUNT_FIELDS}
        for name in _MAX_FIELDS:
            counts[name] = max((getattr(c, name) for c in per_cpu), default=0)
        out[bytes(key)] = _row(key, counts)
    for bk, n in raw_bins:
        if not n:
            continue
        row = out.get(bytes(bk.row))
        if row is None:  # a bin whose row was taken in the other generation (a flip race)
            row = out[bytes(bk.row)] = _row(bk.row, dict.fromkeys(L.AGG_COUNT_FIELDS, 0))
        target = {L.BIN_LATENCY: row.latency, L.BIN_LIFETIME: row.lifetime, L.BIN_FAILURE: row.failures,
                  L.BIN_CLOSE_ERROR: row.close_errors, L.BIN_RTT: row.rtt}.get(bk.kind)
        if target is not None:
            target[bk.index] = target.get(bk.index, 0) + n
    return list(out.values())


def _row(k, counts: dict[str, int]) -> KernelRow:
    inbound = k.direction == L.DIR_INBOUND
    return KernelRow(pid=k.pid, comm=comm_text(bytes(k.comm).ljust(16, b"\0")), cgroup_id=k.cgroup_id,
                     family=k.family, direction=k.direction,
                     daddr="*" if inbound else addr_text(k.family, bytes(k.daddr)), port=k.port, counts=counts)
