"""`connscope run`: the service. Configuration = file, then CONNSCOPE_* environment, then flags."""

from __future__ import annotations

import sys

import click
import orjson

from ..config.secrets import redacted
from .config_flags import config_options


@click.command()
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Exit after this many seconds (for tests and benchmarks).")
@click.option("--print-config", is_flag=True, help="Print the effective configuration as JSON and exit.")
@config_options
def run(load_config, duration, print_config) -> None:
    """Run the agent as a service: summaries, diagnoses and failures always;
    per-connection records unless --no-connections; stdout or Kafka."""
    cfg = load_config()
    if print_config:
        out = {t: redacted(getattr(cfg, t)) for t in ("agent", "filters", "thresholds", "kafka")}
        out["sources"] = cfg.source
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from ..service.daemon import Daemon
    Daemon(load_config, cfg, duration).run()
