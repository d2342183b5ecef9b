"""Window summaries and diagnoses of many hosts, merged into fleet windows.

A summary belongs to the fleet window (`window_s` long, aligned to the
epoch) that holds its `window_end`. Counts add up; the connect-latency
sketches merge exactly (their bins add, so fleet percentiles are those of
one sketch over every host's connects). A process is its command name
plus its systemd service, when it runs as one: the same service on every
host is one row, whatever its pids.

Memory is bounded: at most `max_open` windows open at once (the oldest is
reported early), `max_groups` processes per window (the rest are summed
into "other"), `max_destinations` failing destinations, and
the host lists of a failing destination keep their count exactly but
name at most `HOST_NAMES` hosts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from ..aggregate import sketch
from ..decode.ddbins import RELATIVE_ACCURACY

SUM_FIELDS = ("connects_ok", "connects_failed", "accepts", "closes", "active_closes", "syn_retransmits",
              "synack_retransmits", "retransmits", "resets_sent", "resets_received", "bytes_sent", "bytes_received",
              "failure_records_folded", "nagle_holds")
HOST_NAMES = 20
OTHER = ("other", "")
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
PORT_KINDS = ("port_exhaustion_risk", "port_exhausted")


def epoch_s(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


@dataclass
class Group:
    """One process (command, service) over the fleet in one window."""

    counts: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    hosts: set = field(default_factory=set)
    latency: Counter = field(default_factory=Counter)  # sketch bin -> count
    latency_zero: float = 0.0
    summaries: int = 0

    def new_connections(self) -> int:
        c = self.counts
        return c["connects_ok"] + c["connects_failed"] + c["accepts"]


@dataclass
class Failing:
    """An address and port that failed, with one errno, from some hosts."""

    hosts: int = 0
    names: set = field(default_factory=set)  # at most HOST_NAMES of them
    seen: set = field(default_factory=set)  # every host, to count each once
    attempts: int = 0
    processes: set = field(default_factory=set)


@dataclass
class Bucket:
    start: float
    end: float
    hosts: set = field(default_factory=set)
    summaries: int = 0
    groups: dict = field(default_factory=dict)
    failing: dict = field(default_factory=dict)  # (daddr, dport, errno name) -> Failing
    ports: dict = field(default_factory=dict)  # host -> the destination with the most of its ports used
    diagnoses: dict = field(default_factory=dict)  # kind -> set of hosts
    kernel_lost: dict = field(default_factory=dict)  # host -> the most any of its summaries reported
    sketch_mismatch: int = 0


class FleetWindows:
    def __init__(self, window_s: float = 60.0, max_groups: int = 10_000, max_destinations: int = 10_000,
                 max_open: int = 16):
        self.window_s = window_s
        self.max_open = max_open
        self.max_groups = max_groups
        self.max_destinations = max_destinations
        self.buckets: dict[int, Bucket] = {}
        self.closed_before = float("-inf")  # buckets ending at or before this were reported
        self.late = 0  # summaries for a window already reported
        self.watermark = float("-inf")  # the latest window end seen

    def _bucket(self, end: float) -> Bucket | None:
        if end <= self.closed_before:
            self.late += 1
            return None
        k = int(end // self.window_s)
        if end == k * self.window_s:  # an end on the boundary closes the window before it
            k -= 1
        b = self.buckets.get(k)
        if b is None:
            b = self.buckets[k] = Bucket(k * self.window_s, (k + 1) * self.window_s)
        return b

    # --- input ------------------------------------------------------------------
    def add_summary(self, rec: dict) -> None:
        end = epoch_s(rec["window_end"])
        self.watermark = max(self.watermark, end)
        b = self._bucket(end)
        if b is None:
            return
        host = rec["host"]
        b.hosts.add(host)
        b.summaries += 1
        b.kernel_lost[host] = max(b.kernel_lost.get(host, 0), rec.get("kernel_lost") or 0)
        key = group_key(rec)
        g = b.groups.get(key)
        if g is None:
            if len(b.groups) >= self.max_groups:
                key = OTHER
                g = b.groups.get(key)
            if g is None:
                g = b.groups[key] = Group()
        g.summaries += 1
        g.hosts.add(host)
        counts = g.counts
        for name in SUM_FIELDS:
            n = rec.get(name)
            if n:
                counts[name] += n
        if rec.get("failures"):
            g.failures.update(rec["failures"])
        b.sketch_mismatch += _add_bins(g, rec.get("connect_latency_sketch"))
        for d in rec.get("top_destinations") or ():
            self._destination(b, host, key, d)

    def _destination(self, b: Bucket, host: str, key: tuple, d: dict) -> None:
        if d.get("direction") != "outbound":
            return
        for err, n in (d.get("failures") or {}).items():
            fk = (d["daddr"], d["dport"], err)
            f = b.failing.get(fk)
            if f is None:
                if len(b.failing) >= self.max_destinations:
                    continue
                f = b.failing[fk] = Failing()
            if host not in f.seen:
                f.seen.add(host)
                f.hosts += 1
                if len(f.names) < HOST_NAMES:
                    f.names.add(host)
            f.attempts += n
            if len(f.processes) < HOST_NAMES:
                f.processes.add(key[1] or key[0])
        tw, usable = d.get("time_wait"), d.get("usable_ports")
        if tw is not None and usable:
            share = tw / usable
            held = b.ports.get(host)
            if held is None or share > held["used_share"]:
                b.ports[host] = {"host": host, "daddr": d["daddr"], "dport": d["dport"], "time_wait": tw,
                                 "usable_ports": usable, "used_share": round(share, 4), "diagnoses": []}

    def add_diagnosis(self, rec: dict) -> None:
        if rec.get("state") != "raised":
            return
        end = epoch_s(rec["window_end"]) if rec.get("window_end") else epoch_s(rec["ts"])
        b = self._bucket(end)
        if b is None:
            return
        kind, host = rec.get("kind") or "unknown", rec["host"]
        b.diagnoses.setdefault(kind, set()).add(host)
        if kind in PORT_KINDS:
            held = b.ports.setdefault(host, {"host": host, "daddr": rec.get("daddr"), "dport": rec.get("dport"),
                                             "time_wait": None, "usable_ports": None, "used_share": None,
                                             "diagnoses": []})
            if kind not in held["diagnoses"]:
                held["diagnoses"].append(kind)

    # --- output -----------------------------------------------------------------
    def due(self, watermark: float, lateness: float) -> list[Bucket]:
        """Buckets whose end is `lateness` seconds behind `watermark` (event time,
        or the wall clock once the consumer has caught up), oldest first."""
        out = [b for b in self.buckets.values() if b.end + lateness <= watermark]
        return self._take(out)

    def excess(self) -> list[Bucket]:
        """The oldest buckets beyond max_open: a replay of hours keeps its
        memory bounded, at the cost of counting a summary that comes after
        its window closed as late."""
        if len(self.buckets) <= self.max_open:
            return []
        ordered = sorted(self.buckets.values(), key=lambda b: b.start)
        return self._take(ordered[: len(ordered) - self.max_open])

    def drain(self) -> list[Bucket]:
        """Every open bucket (the end of the stream)."""
        return self._take(list(self.buckets.values()))

    def _take(self, out: list[Bucket]) -> list[Bucket]:
        out.sort(key=lambda b: b.start)
        for b in out:
            del self.buckets[int(b.start // self.window_s)]
            self.closed_before = max(self.closed_before, b.end)
        return out


def group_key(rec: dict) -> tuple[str, str]:
    """(comm, service): the unit only when it is a service, the same name on
    every host (a session scope or a container id is not)."""
    unit = rec.get("unit") or ""
    return rec.get("comm") or "", unit if unit.endswith(".service") else ""


def _add_bins(g: Group, data: dict | None) -> int:
    """Adds a summary's sketch (its protobuf JSON form) into g; 1 when its
    mapping is not ours (it is then left out), else 0."""
    if not data:
        return 0
    gamma = (data.get("mapping") or {}).get("gamma")
    if gamma is not None and abs(gamma - _GAMMA) > 1e-9:
        return 1
    pos = data.get("positiveValues") or {}
    counts = pos.get("contiguousBinCounts")
    if counts:
        offset = pos.get("contiguousBinIndexOffset", 0)
        lat = g.latency
        for i, n in enumerate(counts):
            if n:
                lat[offset + i] += n
    g.latency_zero += data.get("zeroCount", 0) or 0
    return 0


def group_sketch(g: Group):
    sk = sketch.from_bins({k: int(n) for k, n in g.latency.items()})
    if g.latency_zero:
        sk._zero_count += g.latency_zero
        sk._count += g.latency_zero
    return sk
