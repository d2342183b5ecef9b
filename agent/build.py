"""One way to make the agent, for every command.

`trace`, `top`, `run` and `check` each turn their flags into one typed
Config (config/load.py: `run` and `check` over the file and the environment,
`trace` and `top` over the defaults), say what the run is for in a Mode, and
get their tracer and pipeline wired here, the same way. Only the sink and
what runs around the pipeline (the daemon's systemd loop, the signals)
differ between commands.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

from . import __version__
from .aggregate.diagnose import Diagnoser
from .aggregate.ports import PortUsage
from .aggregate.window import WindowAggregator
from .config.model import Config
from .enrich import Enricher
from .filters import EventFilter
from .kernel.hooks import parse_force
from .kernel.loader import LoadOptions


@dataclass(frozen=True)
class Mode:
    """What a run is for."""

    summaries: bool  # window counts in the kernel, summaries (and diagnoses)
    connections: bool  # per-connection records
    failures_always: bool = False  # failure records even without per-connection records
    diagnoses: bool = True  # diagnosis records (and the port use they read)
    window_s: float | None = None  # instead of agent.window (top's interval, trace's --window)


def service_mode(cfg: Config) -> Mode:
    return Mode(summaries=True, connections=cfg.agent.connections, failures_always=True)


def load_options(cfg: Config, aggregate: bool = True) -> LoadOptions:
    return LoadOptions(ringbuf_pages=cfg.agent.buffer_pages, force=parse_force(cfg.agent.force_hooks),
                       strict=cfg.agent.strict, aggregate=aggregate)


def event_filter(cfg: Config) -> EventFilter:
    f = cfg.filters
    return EventFilter.build(f.pids, f.comms, f.ports, f.family == "ipv4", f.family == "ipv6", f.failures)


def filters_field(cfg: Config) -> dict:
    """The filters as the `agent` start record states them."""
    f = cfg.filters
    return {"pids": sorted(f.pids), "comms": sorted(f.comms), "ports": sorted(f.ports),
            "ipv4": f.family == "ipv4", "ipv6": f.family == "ipv6", "failures": f.failures}


def summaries(cfg: Config, mode: Mode) -> tuple[WindowAggregator, Diagnoser | None, PortUsage | None]:
    """The window aggregator, its diagnoser and the port use they read."""
    enricher = _enricher(cfg)
    usage = PortUsage() if mode.diagnoses else None

    def first_seen(pid: int, cgroup_id: int) -> dict:
        if usage is not None:
            usage.note(pid)  # its network namespace, while it is alive
        return enricher.fields(pid, cgroup_id)

    window = mode.window_s or cfg.agent.window
    agg = WindowAggregator(window, time.monotonic_ns(), thresholds=cfg.window_thresholds(), enrich=first_seen)
    return agg, (Diagnoser(cfg.diagnosis_thresholds()) if mode.diagnoses else None), usage


def _enricher(cfg: Config) -> Enricher:
    return Enricher(cfg.agent.cmdline, cfg.agent.sensitive_words)


def socket_watch(cfg: Config, tracer_, usage: PortUsage, agg: WindowAggregator):
    """The live socket scan (aggregate/sockets.py) over the namespaces of the
    processes the port use tracks, its sockets tied to processes by the kernel's
    state, named as the aggregator named them (or, for a process it has not
    seen, by the enricher)."""
    from .aggregate.sockets import SocketWatch

    enricher = _enricher(cfg)

    def names(proc: tuple) -> dict:
        return agg.names.get(proc) or enricher.fields(proc[0], proc[2])

    return SocketWatch(usage.namespaces, tracer_.socket_owners, tracer_.listener_owners, names,
                       cfg.diagnosis_thresholds())


def tracer(cfg: Config, mode: Mode):
    """Compiles, loads and attaches (kernel/loader.py); counting in the kernel only for summaries."""
    from .kernel.loader import Tracer

    return Tracer(load_options(cfg, aggregate=mode.summaries))


def pipeline(cfg: Config, tracer_, sink, mode: Mode):
    """The pipeline from the tracer to the sink (pipeline.py), with its policy from cfg and mode."""
    from .pipeline import Pipeline
    from .records.build import RecordBuilder

    agg = diagnoser = usage = watch = None
    if mode.summaries:
        agg, diagnoser, usage = summaries(cfg, mode)
        if usage is not None and cfg.agent.socket_scan > 0:
            watch = socket_watch(cfg, tracer_, usage, agg)
    ends = cfg.agent.connection_records == "ends"
    builder = RecordBuilder(connect_on_close=ends, health_unread=tracer_.health_unread(), hz=tracer_.kernel_hz())
    return Pipeline(tracer_, builder, sink, event_filter(cfg),
                    queue_max=cfg.agent.queue_max, aggregator=agg, diagnoser=diagnoser, connections=mode.connections,
                    port_usage=usage, failures_always=mode.failures_always, fold_after=cfg.agent.failure_records,
                    socket_watch=watch, socket_scan_s=min(cfg.agent.socket_scan, mode.window_s or cfg.agent.window))


def start_fields(tracer_, seeded: int, **extra) -> dict:
    """What every `agent` start record says about this agent and its hooks."""
    hooks = tracer_.hook_choices()
    return {
        "version": __version__,
        "kernel": platform.release(),
        "hooks": hooks,
        "hooks_summary": ", ".join(f"{k}={v['method'] or 'missing'}" for k, v in hooks.items()),
        "event_reader": tracer_.reader,
        "listeners_seeded": seeded,
        "agent_pid": os.getpid(),
        **extra,
    }
