"""Which events a `trace` shows, and which kernel rows summaries count.

Applied in user space: to decoded records (match), and to the kernel's
window rows (match_row), whose keys hold the process, the family and the
destination port (the remote port of an outbound row, the listening port of
an inbound one), so a filtered summary counts the same connections as the
records. Not in the kernel: an inbound connection's owner is only known
after the socket exists (listener, then first I/O), so a kernel-side pid
filter would drop connections that later turn out to match.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from .decode import layout as L
from .decode.aggregates import KernelRow
from .decode.events import ConnEvent, connect_failed


@dataclass(frozen=True)
class EventFilter:
    pids: frozenset[int] = field(default_factory=frozenset)
    comms: frozenset[bytes] = field(default_factory=frozenset)  # exact, NUL-padded to 16
    ports: frozenset[int] = field(default_factory=frozenset)  # either end
    families: frozenset[int] = field(default_factory=frozenset)
    failures_only: bool = False

    @classmethod
    def build(cls, pids=(), comms=(), ports=(), ipv4=False, ipv6=False, failures_only=False) -> "EventFilter":
        fams = set()
        if ipv4:
            fams.add(socket.AF_INET)
        if ipv6:
            fams.add(socket.AF_INET6)
        return cls(
            frozenset(pids),
            frozenset(c.encode()[:15].ljust(16, b"\0") for c in comms),
            frozenset(ports),
            frozenset(fams),
            failures_only,
        )

    @property
    def empty(self) -> bool:
        return not (self.pids or self.comms or self.ports or self.families or self.failures_only)

    def match(self, ev: ConnEvent) -> bool:
        if self.pids and ev.pid not in self.pids:
            return False
        if self.comms and ev.comm not in self.comms:
            return False
        if self.ports and ev.sport not in self.ports and ev.dport not in self.ports:
            return False
        if self.families and ev.family not in self.families:
            return False
        if self.failures_only and not is_failure(ev):
            return False
        return True

    def match_row(self, row: KernelRow) -> bool:
        """A kernel window row (decode/aggregates.py). With failures_only, the
        row must hold a failed attempt; its other counts stay (a filtered
        summary shows how the failing destination otherwise fared)."""
        if self.pids and row.pid not in self.pids:
            return False
        if self.comms and row.comm.encode()[:15].ljust(16, b"\0") not in self.comms:
            return False
        if self.ports and row.port not in self.ports:
            return False
        if self.families and row.family not in self.families:
            return False
        if self.failures_only and not (row.counts["connects_failed"] or row.counts["resets_sent"]
                                       or row.counts["resets_received"]):
            return False
        return True


def is_failure(ev: ConnEvent) -> bool:
    """A failed attempt, or a connection that ended abnormally (errno or RST)."""
    if ev.type == L.EV_CONNECT:
        return connect_failed(ev)
    if ev.type == L.EV_CLOSE:
        return bool(ev.err) or ev.closed_by == L.CLOSED_BY_RESET
    return False
