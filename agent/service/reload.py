"""SIGHUP: apply a re-read configuration to a running agent, without reloading programs.

Filters, thresholds, the window, per-connection records, the CPU budget,
the status interval and the sink settings change at once; keys marked
`reload="restart"` in agent/config/model.py (buffer sizes, hooks, state
directory, metrics address) are listed as needing a restart.
"""

from __future__ import annotations

import dataclasses
import sys

from ..config.load import changes, needs_restart, section_fields
from ..config.model import SECTIONS, Config
from ..build import event_filter
from .assemble import open_sink, spool_dir


def apply(daemon, old: Config, new: Config) -> dict:
    """Applies what can change live; returns the fields of the `reload` agent record."""
    changed, restart = changes(old, new)
    pipe = daemon.pipe
    # the sink first: if it cannot open, nothing else has changed yet
    if any(k.startswith("kafka.") or k == "agent.output" for k in changed):
        # Close before opening: both would use the same spool directory. The
        # writer thread (this one) is busy here, so nothing is written between.
        pipe.flush_sink()
        pipe.emitter.sink.close()
        try:
            pipe.emitter.sink = open_sink(new)
        except Exception:
            pipe.emitter.sink = open_sink(old)  # keep delivering with what worked
            raise
        if old.agent.output == "kafka" and new.agent.output != "kafka":
            _left_in_spool(spool_dir(old), new.agent.output)
    pipe.set_policy(dataclasses.replace(pipe.policy, filter=event_filter(new), connections=new.agent.connections,
                                        fold_after=new.agent.failure_records))
    pipe.diagnoser.retune(new.diagnosis_thresholds())
    if pipe.socket_watch is not None:
        pipe.socket_watch.retune(new.diagnosis_thresholds())
        pipe.socket_scan_ns = int(min(new.agent.socket_scan, new.agent.window) * 1e9) or None  # 0: no scans
    elif "agent.socket_scan" in changed:  # started with 0: no scanner was made
        changed.remove("agent.socket_scan")
        restart.append("agent.socket_scan")
    pipe.aggregator.retune(new.agent.window, new.window_thresholds())
    daemon.overload.budget = new.agent.cpu_budget
    daemon.status_interval = new.agent.status_interval
    return {"applied": changed, "restart_required": restart}


def running(old: Config, new: Config) -> Config:
    """The configuration the agent runs with after a reload: the new one, but
    keys that need a restart keep their old values, and where those came
    from (the next reload compares against what runs, so such a key stays
    listed until the restart)."""
    sections, source = {}, dict(new.source)
    for table in SECTIONS:
        kept = {}
        for name, f in section_fields(table).items():
            if not needs_restart(f):
                continue
            kept[name] = getattr(getattr(old, table), name)
            key = f"{table}.{name}"
            source.pop(key, None)
            if key in old.source:
                source[key] = old.source[key]
        sections[table] = dataclasses.replace(getattr(new, table), **kept)
    return dataclasses.replace(new, source=source, **sections)


def _left_in_spool(directory: str, output: str) -> None:
    """One line when output leaves Kafka: the closing sink delivered what it
    could within kafka.flush_timeout_s; the rest stays for the next Kafka run."""
    from ..sinks.kafka.waiting import describe

    left = describe(directory)
    what = left or "every record was delivered to Kafka before the switch"
    print(f"connscope: output switched from kafka to {output}: {what}", file=sys.stderr, flush=True)
