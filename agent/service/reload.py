"""SIGHUP: apply a re-read configuration to a running agent, without reloading programs.

Filters, thresholds, the window, per-connection records, the CPU budget,
the status interval and the sink settings change at once; keys marked
`reload="restart"` in agent/config/model.py (buffer sizes, hooks, state
directory, metrics address) are listed as needing a restart.
"""

from __future__ import annotations

from ..config.load import restart_keys, section_fields
from ..config.model import SECTIONS, Config
from .assemble import event_filter, open_sink


def changed_keys(old: Config, new: Config) -> list[str]:
    return [f"{t}.{k}" for t in SECTIONS for k in section_fields(t)
            if getattr(getattr(old, t), k) != getattr(getattr(new, t), k)]


def apply(daemon, old: Config, new: Config) -> dict:
    """Applies what can change live; returns the fields of the `reload` agent record."""
    restart = restart_keys(old, new)
    changed = [k for k in changed_keys(old, new) if k not in restart]
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
    pipe.filter = event_filter(new)
    pipe.connections = new.agent.connections
    pipe.diagnoser.t = new.diagnosis_thresholds()
    pipe.aggregator.thresholds = new.window_thresholds()
    pipe.aggregator.window_ns = int(new.agent.window * 1e9)
    daemon.overload.budget = new.agent.cpu_budget
    daemon.status_interval = new.agent.status_interval
    return {"applied": changed, "restart_required": restart}
