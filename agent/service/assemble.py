"""From a Config to the parts `connscope run` wires together."""

from __future__ import annotations

import os
import platform
import time

from .. import __version__
from ..aggregate.diagnose import Diagnoser, DiagnosisThresholds
from ..aggregate.ports import PortUsage
from ..aggregate.window import Thresholds, WindowAggregator
from ..config.model import Config
from ..enrich import Enricher
from ..filters import EventFilter
from ..kernel.hooks import parse_force
from ..kernel.loader import LoadOptions


def load_options(cfg: Config) -> LoadOptions:
    return LoadOptions(ringbuf_pages=cfg.agent.buffer_pages, force=parse_force(cfg.agent.force_hooks),
                       strict=cfg.agent.strict,
                       aggregate=True)


def event_filter(cfg: Config) -> EventFilter:
    f = cfg.filters
    return EventFilter.build(f.pids, f.comms, f.ports, f.family == "ipv4", f.family == "ipv6", f.failures)


def aggregation(cfg: Config) -> tuple[WindowAggregator, Diagnoser, PortUsage]:
    return summaries(cfg.agent.window, cfg.window_thresholds(), cfg.diagnosis_thresholds(),
                     Enricher(cfg.agent.cmdline, cfg.agent.sensitive_words))


def summaries(window_s: float, window_thresholds: Thresholds, diagnosis_thresholds: DiagnosisThresholds,
              enricher: Enricher) -> tuple[WindowAggregator, Diagnoser, PortUsage]:
    """The window aggregator, its diagnoser and the port use they read, wired as
    every summarising command needs them (`run`, `trace --summary`)."""
    usage = PortUsage()

    def first_seen(pid: int, cgroup_id: int) -> dict:
        usage.note(pid)  # its network namespace, while it is alive
        return enricher.fields(pid, cgroup_id)

    agg = WindowAggregator(window_s, time.monotonic_ns(), thresholds=window_thresholds, enrich=first_seen)
    return agg, Diagnoser(diagnosis_thresholds), usage


def start_fields(tracer, seeded: int, **extra) -> dict:
    """What every `agent` start record says about this agent and its hooks."""
    hooks = tracer.hook_choices()
    return {
        "version": __version__,
        "kernel": platform.release(),
        "hooks": hooks,
        "hooks_summary": ", ".join(f"{k}={v['method'] or 'missing'}" for k, v in hooks.items()),
        "listeners_seeded": seeded,
        "agent_pid": os.getpid(),
        **extra,
    }


def open_sink(cfg: Config):
    """The configured sink. Kafka spools under agent.state_dir/spool."""
    if cfg.agent.output == "kafka":
        from ..sinks.kafka import KafkaSink
        return KafkaSink(cfg.kafka, spool_dir(cfg))
    from ..sinks.jsonlines import JsonLinesSink
    return JsonLinesSink()


def spool_dir(cfg: Config) -> str:
    return os.path.join(cfg.agent.state_dir, "spool")


def announce_sink(cfg: Config, warn) -> None:
    """At start-up, one line when the brokers answer (the sink itself reports them down, once)."""
    if cfg.agent.output != "kafka":
        return
    from ..sinks.kafka import probe

    ok, message = probe(cfg.kafka, timeout=3.0)
    if ok:
        warn(f"connscope: {message}")


def filters_field(cfg: Config) -> dict:
    f = cfg.filters
    return {"pids": sorted(f.pids), "comms": sorted(f.comms), "ports": sorted(f.ports),
            "ipv4": f.family == "ipv4", "ipv6": f.family == "ipv6", "failures": f.failures}
