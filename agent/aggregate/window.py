"""Windowed per-process and per-destination aggregates.

The kernel counts (bpf/aggregate.c): at a window's end its rows, which
passed the filters, are merged in here with add_kernel(), so no Python runs
per connection and no buffer loss, sampling or folding can make a count
drift. add() takes the few records the kernel never counted: sockets the
reaper finalized in user space. note() sees every record that reaches user
space, only to name a process (command line, unit) while it is alive.
Kernel-side losses in a window are carried in its summaries
(`kernel_lost`), so a consumer knows when a count may be short.

A process is (pid, comm, cgroup_id). A destination is the remote address
and port for outbound connections, the local listening port for inbound
ones (its `daddr` is then "*").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..decode import layout as L
from ..decode.aggregates import KernelRow
from ..decode.events import ConnEvent, connect_failed
from ..decode.text import addr_text, comm_text, error_name
from . import sketch


@dataclass
class DestStats:
    connects_ok: int = 0
    connects_failed: int = 0
    failures: Counter = field(default_factory=Counter)
    accepts: int = 0
    closes: int = 0
    active_closes: int = 0
    short_lived: int = 0
    syn_retransmits: int = 0
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    failure_records_folded: int = 0  # failure records the kernel counted but did not send (a storm)
    failure_wait_max_us: int = 0  # the longest a failed connect waited, start to failure
    close_errors: Counter = field(default_factory=Counter)  # errno name -> established connections it ended
    bytes_sent: int = 0  # payload of the closes whose socket was read
    bytes_received: int = 0
    nagle_holds: int = 0  # small writes Nagle's algorithm held back (bpf/nagle.c)
    latency: object = field(default_factory=sketch.new)
    lifetime: object = field(default_factory=sketch.new)
    rtt: object = field(default_factory=sketch.new)  # smoothed RTT at close, us

    @property
    def new_connections(self) -> int:
        return self.connects_ok + self.connects_failed + self.accepts

    def merge(self, other: "DestStats") -> None:
        """Adds another's counts (not its sketches): a command's processes together."""
        for name, _count in _DEST_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.update(other.failures)
        self.close_errors.update(other.close_errors)
        self.failure_wait_max_us = max(self.failure_wait_max_us, other.failure_wait_max_us)


@dataclass
class ProcStats(DestStats):
    synack_retransmits: int = 0
    syn_stalled: int = 0  # successful connects that needed SYN retransmits
    # Successful connects with no handshake time, so not in the latency
    # sketch: the kernel skipped their ESTABLISHED transition (recursion
    # guard) and the record came late, flagged incomplete.
    connects_untimed: int = 0
    latency_max_us: int = 0
    dests: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)  # enrichment, taken while the process is alive
    counts_from_kernel: bool = False


# Kernel row counts (layout.AGG_COUNT_FIELDS) summed into a process and each
# of its destinations: (DestStats field, row count); then the process-only ones.
_DEST_SUMS = (
    ("connects_ok", "connects_ok"), ("connects_failed", "connects_failed"), ("accepts", "accepts"),
    ("closes", "closes"), ("active_closes", "active_closes"), ("short_lived", "short_lived"),
    ("syn_retransmits", "syn_retransmits"), ("retransmits", "retransmits"), ("resets_sent", "resets_sent"),
    ("resets_received", "resets_received"), ("failure_records_folded", "folded"),
    ("bytes_sent", "bytes_sent"), ("bytes_received", "bytes_received"), ("nagle_holds", "nagle_holds"),
)
_PROC_SUMS = ("synack_retransmits", "syn_stalled", "connects_untimed")


@dataclass(frozen=True)
class Thresholds:
    short_lifetime_us: int = 1_000_000


class WindowAggregator:
    """Accumulates one window; `close(end_ns)` returns its summaries and starts the next."""

    def __init__(self, window_s: float, start_ns: int, thresholds: Thresholds | None = None, top_n: int = 5,
                 enrich=None):
        self.window_ns = int(window_s * 1e9)
        self.start_ns = start_ns
        self.thresholds = thresholds or Thresholds()
        self.top_n = top_n
        self.procs: dict[tuple[int, str, int], ProcStats] = {}
        self.kernel_lost = 0
        self.enrich = enrich  # (pid, cgroup_id) -> names; called when a process first shows up
        self.names: dict[tuple[int, str, int], dict] = {}  # taken at a process's first record
        self._noted: set = set()  # processes named in this window

    def retune(self, window_s: float, thresholds: Thresholds) -> None:
        """A reload's new window length and thresholds, from the next window on."""
        self.window_ns = int(window_s * 1e9)
        self.thresholds = thresholds

    def due(self, now_ns: int) -> bool:
        return now_ns - self.start_ns >= self.window_ns

    def note(self, ev: ConnEvent) -> None:
        """A record reached user space: name its process now if it is new,
        while it is alive (the kernel sends every process's first record)."""
        key = (ev.pid, comm_text(ev.comm), ev.cgroup_id)
        if key not in self.names and self.enrich is not None:
            self.names[key] = self.enrich(ev.pid, ev.cgroup_id)
            self._noted.add(key)

    def _proc(self, key: tuple[int, str, int]) -> ProcStats:
        p = self.procs.get(key)
        if p is None:
            p = self.procs[key] = ProcStats()
            names = self.names.get(key)
            if names is None and self.enrich is not None:
                names = self.names[key] = self.enrich(key[0], key[2])
            p.names = names or {}
        return p

    def add_kernel(self, rows: list[KernelRow]) -> None:
        """Merges the kernel's counts of this window (decode/aggregates.py)."""
        for row in rows:
            p = self._proc(row.proc)
            p.counts_from_kernel = True
            d = p.dests.get(row.dest)
            if d is None:
                d = p.dests[row.dest] = DestStats()
            c = row.counts
            failures = Counter({error_name(e) if e else "ABORTED": n for e, n in row.failures.items()})
            close_errors = Counter({error_name(e): n for e, n in row.close_errors.items()})
            wait_us = c["failure_wait_max_ns"] // 1000
            for s in (p, d):
                s.failures.update(failures)
                s.close_errors.update(close_errors)
                s.failure_wait_max_us = max(s.failure_wait_max_us, wait_us)
                for name, count in _DEST_SUMS:
                    setattr(s, name, getattr(s, name) + c[count])
            for name in _PROC_SUMS:
                setattr(p, name, getattr(p, name) + c[name])
            if row.latency:
                p.latency_max_us = max(p.latency_max_us, c["latency_max_ns"] // 1000)
                d.latency.merge(sketch.from_bins(row.latency))
            if row.lifetime:
                d.lifetime.merge(sketch.from_bins(row.lifetime))
            if row.rtt:
                d.rtt.merge(sketch.from_bins(row.rtt))

    def add(self, ev: ConnEvent) -> None:
        """A record the kernel did not count (reaped in user space)."""
        self.note(ev)
        p = self._proc((ev.pid, comm_text(ev.comm), ev.cgroup_id))
        if ev.direction == L.DIR_INBOUND:
            dkey = ("*", ev.sport, "inbound")
        else:
            dkey = (addr_text(ev.family, ev.daddr), ev.dport, "outbound")
        d = p.dests.get(dkey)
        if d is None:
            d = p.dests[dkey] = DestStats()
        # Distributions go into the destination only; the process's are the
        # merge of its destinations' at close (one sketch insert, not two).
        self._count(p, ev, False)
        self._count(d, ev, True)
        if ev.type == L.EV_CONNECT and not connect_failed(ev):
            lat = (ev.established_ns - ev.start_ns) // 1000 if ev.start_ns and ev.established_ns else None
            if lat is not None:
                p.latency_max_us = max(p.latency_max_us, lat)
                if ev.syn_retransmits:
                    p.syn_stalled += 1
            else:
                p.connects_untimed += 1
        elif ev.type == L.EV_ACCEPT:
            p.synack_retransmits += ev.synack_retransmits

    def _count(self, s: DestStats, ev: ConnEvent, sketches: bool) -> None:
        if ev.type == L.EV_CONNECT:
            if connect_failed(ev):
                s.connects_failed += 1
                s.failures[error_name(ev.err) if ev.err else "ABORTED"] += 1
                if ev.start_ns and ev.end_ns > ev.start_ns:
                    s.failure_wait_max_us = max(s.failure_wait_max_us, (ev.end_ns - ev.start_ns) // 1000)
            else:
                s.connects_ok += 1
                if sketches and ev.start_ns and ev.established_ns:
                    s.latency.add((ev.established_ns - ev.start_ns) / 1000)
            s.syn_retransmits += ev.syn_retransmits
            s.resets_received += ev.resets_received
        elif ev.type == L.EV_ACCEPT:
            s.accepts += 1
        elif ev.type == L.EV_CLOSE:
            s.closes += 1
            if ev.flags & L.F_TIME_WAIT:
                s.active_closes += 1
            s.retransmits += ev.retransmits
            if ev.err:
                s.close_errors[error_name(ev.err)] += 1
            s.resets_sent += ev.resets_sent
            s.resets_received += ev.resets_received
            if ev.health & L.H_READ:
                s.bytes_sent += ev.bytes_sent
                s.bytes_received += ev.bytes_received
                if sketches and ev.srtt_us:
                    s.rtt.add(ev.srtt_us)
            if ev.established_ns and ev.end_ns and not ev.flags & L.F_PREEXISTING:
                life_us = (ev.end_ns - ev.established_ns) / 1000
                if sketches:
                    s.lifetime.add(life_us)
                if life_us < self.thresholds.short_lifetime_us:
                    s.short_lived += 1

    def close(self, end_ns: int) -> "WindowResult":
        for p in self.procs.values():
            for d in p.dests.values():
                p.latency.merge(d.latency)
                p.lifetime.merge(d.lifetime)
                p.rtt.merge(d.rtt)
        result = WindowResult(self.start_ns, end_ns, self.procs, self.kernel_lost, self.thresholds, self.top_n)
        # names of processes quiet for a whole window are taken again if they return
        self.names = {k: v for k, v in self.names.items() if k in self.procs or k in self._noted}
        self._noted = set()
        self.start_ns, self.procs, self.kernel_lost = end_ns, {}, 0
        return result


@dataclass
class WindowResult:
    start_ns: int
    end_ns: int
    procs: dict
    kernel_lost: int
    thresholds: Thresholds
    top_n: int

    @property
    def seconds(self) -> float:
        return max(1e-9, (self.end_ns - self.start_ns) / 1e9)

    def dest_fields(self, dkey, d: DestStats) -> dict:
        daddr, dport, direction = dkey
        return {
            "daddr": daddr, "dport": dport, "direction": direction,
            "connects_ok": d.connects_ok, "connects_failed": d.connects_failed, "failures": dict(d.failures),
            "accepts": d.accepts, "closes": d.closes, "active_closes": d.active_closes,
            "new_connections_per_s": round(d.new_connections / self.seconds, 3),
            "lifetime_us": sketch.percentiles(d.lifetime),
            "short_lived_share": round(d.short_lived / d.closes, 4) if d.closes else None,
            "connect_latency_us": sketch.percentiles(d.latency),
            "syn_retransmits": d.syn_retransmits, "retransmits": d.retransmits,
            "resets_sent": d.resets_sent, "resets_received": d.resets_received,
            "connect_failure_wait_max_us": d.failure_wait_max_us if d.connects_failed else None,
            "close_errors": dict(d.close_errors),
            "bytes_sent": d.bytes_sent, "bytes_received": d.bytes_received,
            "rtt_us": sketch.percentiles(d.rtt), "nagle_holds": d.nagle_holds,
        }

    def summary_fields(self, p: ProcStats) -> dict:
        dests = sorted(p.dests.items(), key=lambda kv: (-kv[1].new_connections, -kv[1].connects_failed, kv[0][1]))
        lat = sketch.percentiles(p.latency)
        lat["max"] = p.latency_max_us if p.latency.count else None
        return {
            "window_s": round(self.seconds, 3),
            "connects_ok": p.connects_ok, "connects_failed": p.connects_failed, "failures": dict(p.failures),
            "accepts": p.accepts, "closes": p.closes, "active_closes": p.active_closes,
            "new_connections_per_s": round(p.new_connections / self.seconds, 3),
            "lifetime_us": sketch.percentiles(p.lifetime),
            "short_lived_share": round(p.short_lived / p.closes, 4) if p.closes else None,
            "short_lifetime_us": self.thresholds.short_lifetime_us,
            "connect_latency_us": lat,
            "syn_stalled_connects": p.syn_stalled,
            "connects_untimed": p.connects_untimed,
            "syn_retransmits": p.syn_retransmits, "synack_retransmits": p.synack_retransmits,
            "retransmits": p.retransmits, "resets_sent": p.resets_sent, "resets_received": p.resets_received,
            "connect_latency_sketch": sketch.to_json(p.latency),
            "lifetime_sketch": sketch.to_json(p.lifetime),
            "top_destinations": [self.dest_fields(k, d) for k, d in dests[: self.top_n]],
            "kernel_lost": self.kernel_lost,
            "failure_records_folded": p.failure_records_folded,
            "connect_failure_wait_max_us": p.failure_wait_max_us if p.connects_failed else None,
            "close_errors": dict(p.close_errors),
            "counts_from": "kernel" if p.counts_from_kernel else "records",
            "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
            "rtt_us": sketch.percentiles(p.rtt),
            "rtt_sketch": sketch.to_json(p.rtt),
            "nagle_holds": p.nagle_holds,
        }
