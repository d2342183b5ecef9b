"""Window results and findings -> `summary` and `diagnosis` records (schema v1)."""

from __future__ import annotations

from ..aggregate.diagnose import Finding
from ..aggregate.window import WindowResult
from .build import RecordBuilder


def _window(builder: RecordBuilder, w: WindowResult) -> dict:
    return {"window_start": builder.clock.rfc3339(w.start_ns), "window_end": builder.clock.rfc3339(w.end_ns)}


def summary_records(builder: RecordBuilder, w: WindowResult, usage: dict | None = None) -> list[dict]:
    """One `summary` per process active in the window, busiest first, with the
    names the aggregator took when the process showed up (unit, cmdline...).
    `usage` (agent/aggregate/ports.py) gives each outbound destination its
    TIME_WAIT sockets and usable ports: null where it was not read."""
    out = []
    ts = builder.clock.rfc3339(w.end_ns)
    procs = sorted(w.procs.items(), key=lambda kv: -kv[1].new_connections)
    for (pid, comm, cgroup_id), p in procs:
        rec = builder.base("summary", ts, pid, comm, cgroup_id, "aggregate")
        rec.update(_window(builder, w))
        rec.update(p.names)
        rec.update(w.summary_fields(p))
        for d in rec["top_destinations"]:
            u = usage.get(((pid, comm, cgroup_id), (d["daddr"], d["dport"], d["direction"]))) if usage else None
            d["time_wait"] = u["time_wait"] if u else None
            d["usable_ports"] = u["usable"] if u else None
        out.append(rec)
    return out


def diagnosis_record(builder: RecordBuilder, w: WindowResult, f: Finding) -> dict:
    pid, comm, cgroup_id = f.proc
    daddr, dport, direction = f.dest
    rec = builder.base("diagnosis", builder.clock.rfc3339(w.end_ns), pid, comm, cgroup_id, "aggregate")
    rec.update(_window(builder, w))
    proc = w.procs.get(f.proc)
    if proc is not None:
        rec.update(proc.names)
    elif f.names:
        rec.update(f.names)
    rec.update(kind=f.kind, severity=f.severity, state=f.state, daddr=daddr, dport=dport, direction=direction,
               evidence=f.evidence, hint=f.hint, scope=f.scope)
    return rec
