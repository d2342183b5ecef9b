"""`connscope trace`: per-connection records (or window summaries) for incidents."""

from __future__ import annotations

import sys

import click

from .. import build
from ..config.load import from_values
from ..sinks.jsonlines import JsonLinesSink
from ..sinks.table import TableSink
from .options import filter_options, parse_thresholds, tracer_options, tracer_values
from .session import run_session


@click.command()
@filter_options
@click.option("--failures", is_flag=True, help="Only failed attempts and abnormal closes (errno or reset).")
@click.option("--ends", is_flag=True,
              help="One record per connection end (with its connect latency) and every failed attempt, "
                   "instead of connect, accept and close records.")
@click.option("--summary", is_flag=True, help="Per-process window summaries and diagnoses instead of connections.")
@click.option("--window", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="Summary window length.")
@click.option("--threshold", "thresholds", multiple=True, callback=parse_thresholds, metavar="NAME=VALUE",
              help="Override a diagnosis threshold (see README), e.g. churn_per_s=50 (repeatable).")
@click.option("--cmdline", "cmdline", type=click.Choice(["scrubbed", "full", "off"]), default="scrubbed",
              show_default=True, help="Command lines in summaries: secrets masked, as they are, or none.")
@click.option("--sensitive-word", "sensitive_words", multiple=True, metavar="WORD",
              help="An argument whose name contains WORD holds a secret (adds to the built-in list; repeatable).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Exit after this many seconds.")
@tracer_options
def trace(as_json, pids, comms, ports, failures, ipv4, ipv6, ends, summary, window, thresholds, cmdline,
          sensitive_words, duration, **tracer_kw) -> None:
    """Print one record per connection attempt, accepted connection and close."""
    _refuse_conflicts(click.get_current_context(), summary)
    if comms and any(len(c.encode()) > 15 for c in comms):
        raise click.BadParameter("a comm is at most 15 bytes (the kernel truncates names)", param_hint="--comm")
    cfg = from_values({
        **tracer_values(**tracer_kw), **thresholds,
        "filters.pids": (list(pids), "--pid"), "filters.comms": (list(comms), "--comm"),
        "filters.ports": (list(ports), "--port"), "filters.failures": (failures, "--failures"),
        "filters.family": ("ipv4" if ipv4 else "ipv6" if ipv6 else "any", "-4" if ipv4 else "-6"),
        "agent.connection_records": ("ends" if ends else "all", "--ends"),
        "agent.cmdline": (cmdline, "--cmdline"), "agent.sensitive_words": (list(sensitive_words), "--sensitive-word"),
    })
    table = not as_json and sys.stdout.isatty()
    sink = TableSink() if table else JsonLinesSink()
    mode = build.Mode(summaries=summary, connections=not summary, window_s=window)
    run_session(cfg, sink, mode, duration,
                start_extra={"filters": build.filters_field(cfg), "mode": "summary" if summary else "connections"})


# Flags that only shape summaries: given without --summary they would do nothing.
_SUMMARY_ONLY = {"window": "--window", "thresholds": "--threshold", "cmdline": "--cmdline",
                 "sensitive_words": "--sensitive-word"}


def _refuse_conflicts(ctx: click.Context, summary: bool) -> None:
    """Flags that do nothing without --summary are errors (exit 2)."""
    if not summary:
        for param, flag in _SUMMARY_ONLY.items():
            if ctx.get_parameter_source(param) is not click.core.ParameterSource.DEFAULT:
                raise click.UsageError(f"{flag} only applies with --summary; add --summary or drop {flag}")
