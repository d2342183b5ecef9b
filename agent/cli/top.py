"""`connscope top`: a live per-process table of connection activity."""

from __future__ import annotations

import time

import click

from ..aggregate.window import WindowAggregator
from ..sinks.top import SORT_KEYS, TopSink
from .options import tracer_options
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
    run_session(tracer_kw, TopSink(sort, limit, interval=interval), duration, start_extra={"mode": "top"},
                aggregator=WindowAggregator(interval, time.monotonic_ns()), connections=False)
