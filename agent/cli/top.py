"""`connscope top`: a live per-process table of connection activity."""

from __future__ import annotations

import click

from .. import build
from ..config.load import from_values
from ..sinks.top import SORT_KEYS, TopSink
from .options import tracer_options, tracer_values
from .session import run_session


@click.command()
@click.option("--sort", type=click.Choice(sorted(SORT_KEYS)), default="churn", show_default=True,
              help="Order of the rows.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True, metavar="SECONDS",
              help="Refresh interval (each row covers one interval).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Rows shown.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Exit after this many seconds.")
@tracer_options
def top(sort, interval, limit, duration, **tracer_kw) -> None:
    """Processes by new connections, failures, latency or retransmits, refreshed each interval.

    On a terminal the screen is redrawn; otherwise one snapshot is printed per interval.
    Every interval is drawn, quiet ones too: a process that stops connecting
    shows at zero for 5 intervals, then leaves the table.
    """
    cfg = from_values(tracer_values(**tracer_kw))
    # each row is one interval of the kernel's counts; no diagnoses on this screen
    mode = build.Mode(summaries=True, connections=False, diagnoses=False, window_s=interval)
    run_session(cfg, TopSink(sort, limit, interval=interval), mode, duration, start_extra={"mode": "top"})
