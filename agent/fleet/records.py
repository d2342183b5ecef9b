"""Fleet windows, gaps and stream counts -> `fleet` records (schema v1).

A fleet record's own `host`, `run_id` and `seq` are the consumer's; the
agent run a gap belongs to is `agent_host` / `agent_run_id`.
"""

from __future__ import annotations

import os
from collections import Counter

from ..aggregate import sketch
from ..records.build import RecordBuilder, self_cgroup_id
from ..records.clock import format_wall_ns
from .ledger import Gap
from .merge import SUM_FIELDS, Bucket, Group, group_sketch


class FleetRecords:
    def __init__(self, builder: RecordBuilder, top: int = 10):
        self.builder = builder
        self.top = top

    def _base(self, view: str) -> dict:
        rec = self.builder.base("fleet", self.builder.clock.now(), os.getpid(), "connscope", self_cgroup_id(),
                                "agent")
        rec["view"] = view
        return rec

    def window(self, b: Bucket) -> dict:
        rec = self._base("window")
        seconds = b.end - b.start
        groups = [(key, g, group_sketch(g)) for key, g in b.groups.items()]
        entries = [_process(key, g, sk, seconds) for key, g, sk in groups]
        total = Group()
        for _key, g, _sk in groups:
            total.counts.update(g.counts)
            total.failures.update(g.failures)
            total.latency.update(g.latency)
            total.latency_zero += g.latency_zero
        totals = {name: total.counts[name] for name in SUM_FIELDS}
        totals["failures"] = dict(total.failures)
        top = self.top

        def best(metric, entries=entries):
            return sorted(entries, key=lambda e: (-metric(e), e["comm"], e["unit"]))[:top]

        failing = sorted(b.failing.items(), key=lambda kv: (-kv[1].hosts, -kv[1].attempts, kv[0]))
        ports = sorted(b.ports.values(), key=lambda p: (-(p["used_share"] or 0), -len(p["diagnoses"]), p["host"]))
        rec.update(
            window_start=format_wall_ns(int(b.start * 1e9)), window_end=format_wall_ns(int(b.end * 1e9)),
            window_s=round(seconds, 3), hosts=len(b.hosts), summaries=b.summaries, processes=len(b.groups),
            totals=totals, connect_latency_us=sketch.percentiles(group_sketch(total)),
            top_by_churn=best(lambda e: e["new_connections"]),
            top_by_failures=best(lambda e: e["connects_failed"]),
            top_by_latency=best(lambda e: e["connect_latency_us"]["p99"] or 0),
            top_by_retransmits=best(lambda e: e["retransmits"]),
            failing_destinations=[
                {"daddr": daddr, "dport": dport, "error": err, "hosts": f.hosts, "attempts": f.attempts,
                 "host_names": sorted(f.names), "processes": sorted(f.processes)}
                for (daddr, dport, err), f in failing[:top]],
            port_pressure=ports[:top],
            diagnoses={kind: len(hosts) for kind, hosts in sorted(b.diagnoses.items())},
            kernel_lost=sum(b.kernel_lost.values()),
            sketch_mismatch=b.sketch_mismatch,
        )
        return rec

    def gap(self, gap: Gap) -> dict:
        rec = self._base("gap")
        rec.update(agent_host=gap.host, agent_run_id=gap.run_id, seq_first=gap.first, seq_last=gap.last,
                   missing=gap.missing, explained=gap.explained,
                   explained_by=[{"seq": lost.seq, "count": lost.count, "reason": lost.reason,
                                  "seq_first": lost.first, "seq_last": lost.last} for lost in gap.explained_by])
        return rec

    def stream(self, stats: dict, final: bool) -> dict:
        rec = self._base("stream")
        rec.update(stats)
        rec["final"] = final
        return rec


def _process(key: tuple, g: Group, sk, seconds: float) -> dict:
    comm, unit = key
    c: Counter = g.counts
    new = g.new_connections()
    out = {"comm": comm, "unit": unit, "hosts": len(g.hosts), "summaries": g.summaries,
           "new_connections": new, "new_connections_per_s": round(new / seconds, 3) if seconds else None}
    for name in SUM_FIELDS:
        out[name] = c[name]
    out["failures"] = dict(g.failures)
    out["connect_latency_us"] = sketch.percentiles(sk)
    return out
