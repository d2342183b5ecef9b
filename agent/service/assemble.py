"""The service's sink, from a Config (the agent itself is made in agent/build.py)."""

from __future__ import annotations

import os

from ..config.model import Config


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
