"""`connscope trace`: per-connection records for incidents."""

from __future__ import annotations

import os
import platform
import signal
import sys

import click

from .. import __version__
from ..filters import EventFilter
from ..records.build import RecordBuilder
from ..sinks.jsonlines import JsonLinesSink
from ..sinks.table import TableSink
from .options import load_options, tracer_options


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the default when stdout is not a terminal).")
@click.option("--pid", "pids", multiple=True, type=click.IntRange(min=1), help="Only this process id (repeatable).")
@click.option("--comm", "comms", multiple=True, help="Only this command name, exact (repeatable).")
@click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535),
              help="Only connections with this port at either end (repeatable).")
@click.option("--failures", is_flag=True, help="Only failed attempts and abnormal closes (errno or reset).")
@click.option("-4", "ipv4", is_flag=True, help="Only IPv4.")
@click.option("-6", "ipv6", is_flag=True, help="Only IPv6.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Exit after this many seconds.")
@tracer_options
def trace(as_json, pids, comms, ports, failures, ipv4, ipv6, duration, **tracer_kw) -> None:
    """Print one record per connection attempt, accepted connection and close."""
    from ..kernel.listeners import current_listeners
    from ..kernel.loader import Tracer
    from ..pipeline import Pipeline

    if comms and any(len(c.encode()) > 15 for c in comms):
        raise click.BadParameter("a comm is at most 15 bytes (the kernel truncates names)", param_hint="--comm")
    flt = EventFilter.build(pids, comms, ports, ipv4, ipv6, failures)
    tracer = Tracer(load_options(**tracer_kw))
    try:
        seeded = tracer.seed_listeners(current_listeners())
        table = not as_json and sys.stdout.isatty()
        sink = TableSink() if table else JsonLinesSink()
        pipe = Pipeline(tracer, RecordBuilder(), sink, flt)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: pipe.stop.set())
        hooks = tracer.hook_choices()
        pipe.run(duration, start_fields={
            "version": __version__,
            "kernel": platform.release(),
            "hooks": hooks,
            "hooks_summary": ", ".join(f"{k}={v['method'] or 'missing'}" for k, v in hooks.items()),
            "listeners_seeded": seeded,
            "filters": {"pids": sorted(pids), "comms": sorted(comms), "ports": sorted(ports),
                        "ipv4": ipv4, "ipv6": ipv6, "failures": failures},
            "agent_pid": os.getpid(),
        })
    finally:
        tracer.close()
