"""`connscope fleet`: the connscope topics of many hosts, merged, with the proof that nothing went missing."""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from datetime import datetime

import click

from ..errors import UsageError

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SORTS = ("churn", "failures", "latency", "retransmits")


def parse_time_ms(text: str, flag: str, now: float | None = None) -> int:
    """RFC 3339 ('2026-11-28T10:00:00Z') or relative ('-15m', '-2h') -> epoch ms."""
    m = _RELATIVE.match(text.strip())
    if m:
        return int(((now or time.time()) - float(m.group(1)) * _UNIT_S[m.group(2)]) * 1000)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a time",
                         "give RFC 3339 (2026-11-28T10:00:00Z) or a time back from now (-15m, -2h, -1d)") from None
    if dt.tzinfo is None:
        raise UsageError(f"{flag} {text!r} has no time zone", "add Z (UTC) or an offset such as +01:00")
    return int(dt.timestamp() * 1000)


@click.command()
@click.option("--config", "config_path", metavar="FILE",
              help="TOML configuration whose [kafka] table says how to reach the brokers (TLS, SASL, topic).")
@click.option("--bootstrap", multiple=True, metavar="HOST:PORT", help="Brokers (instead of kafka.bootstrap).")
@click.option("--topic", "topics", multiple=True, metavar="NAME",
              help="Topics to read [default: kafka.topic's topics] (repeatable).")
@click.option("--group", default="connscope-fleet", show_default=True,
              help='Consumer group: instances of one group share partitions; "" = no group, every partition.')
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record Kafka still holds.")
@click.option("--since", metavar="TIME", help="Start at the first record at or after TIME (RFC 3339, or -15m).")
@click.option("--until", metavar="TIME", help="Stop at the first record after TIME, then exit.")
@click.option("--exit-at-end", is_flag=True, help="Exit once every partition is read to its end.")
@click.option("--window", type=click.FloatRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="Fleet window: summaries whose window ends in it are merged.")
@click.option("--lateness", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="How long after its end a fleet window waits for late summaries.")
@click.option("--gap-grace", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="How long a seq gap may stay open (a late record can fill it) before it is reported.")
@click.option("--top", "top_n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows in each ranking of a window.")
@click.option("--sort", type=click.Choice(SORTS), default="churn", show_default=True,
              help="The table's process ranking.")
@click.option("--stats-interval", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="SECONDS", help="Seconds between `stream` records (0 = only at the end).")
@click.option("--json/--table", "as_json", default=None,
              help="JSON lines or a table [default: a table on a terminal, JSON lines otherwise].")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Exit after this many seconds.")
def fleet(config_path, bootstrap, topics, group, from_beginning, since, until, exit_at_end, window, lateness,
          gap_grace, top_n, sort, stats_interval, as_json, duration) -> None:
    """Merge the summaries of every host on the connscope topics into fleet windows: top processes,
    destinations failing from many hosts, hosts near port exhaustion; remove duplicates and report
    every seq gap that no `lost` record explains."""
    from ..config.load import load
    from ..fleet.consumer import FleetConsumer
    from ..fleet.ledger import Ledger
    from ..fleet.merge import FleetWindows
    from ..fleet.records import FleetRecords
    from ..fleet.source import FleetSource
    from ..records.build import RecordBuilder

    flags = {"kafka.bootstrap": (",".join(bootstrap), "--bootstrap")} if bootstrap else {}
    cfg = load(config_path, flags=flags)
    settings = cfg.kafka
    if not settings.bootstrap:
        raise UsageError("fleet: no brokers to read from", "pass --bootstrap HOST:PORT or set kafka.bootstrap")
    settings.validate()
    since_ms = parse_time_ms(since, "--since") if since else None
    until_ms = parse_time_ms(until, "--until") if until else None
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise UsageError(f"--until {until!r} is not after --since {since!r}", "swap them or widen the range")
    conf = {"bootstrap_servers": list(settings.bootstrap), **settings.connection_config()}
    source = FleetSource(conf, list(topics) or settings.topics(), group, from_beginning, since_ms, until_ms,
                         exit_at_end)
    bounded = source.exit_at_end
    if as_json is None:
        as_json = not sys.stdout.isatty()
    out = _json_out() if as_json else _table_out(sort)
    consumer = FleetConsumer(source, FleetWindows(window), Ledger(gap_grace), FleetRecords(RecordBuilder(), top_n),
                             out, lateness_s=lateness, stats_interval_s=stats_interval, bounded=bounded)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        consumer.run(stop, duration)
    finally:
        source.close()


def _json_out():
    from ..sinks.jsonlines import JsonLinesSink

    sink = JsonLinesSink()
    seq = [0]

    def emit(rec: dict) -> None:
        seq[0] += 1
        rec["seq"] = seq[0]
        sink.write(rec)
        sink.flush()
    return emit


def _table_out(sort: str):
    from ..sinks.fleet_table import FleetTableSink

    sink = FleetTableSink(sort=f"top_by_{sort}")
    seq = [0]

    def emit(rec: dict) -> None:
        seq[0] += 1
        rec["seq"] = seq[0]
        sink.write(rec)
    return emit
