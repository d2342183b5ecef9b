"""`connscope fleet`'s loop: records in, duplicates out, windows merged, fleet records out.

One thread. Each poll's records are decoded once; a record already seen
(same host, run_id and seq) is counted as a duplicate and goes no
further. Fleet windows close when the newest summary's window end is
`lateness` seconds past them (event time), or, once the consumer has
caught up with the stream, when the wall clock is; bounded reviews
(--exit-at-end, --until) close them all at the end instead, since a
replay reads partitions unevenly and event time then jumps ahead.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson

from .ledger import Ledger
from .merge import FleetWindows
from .records import FleetRecords

SETTLE_EVERY_S = 1.0
TROUBLE_AFTER_S = 10.0  # no record for this long, and kafka-python logged trouble: say so on stderr
TROUBLE_EVERY_S = 60.0


@dataclass
class StreamStats:
    consumed: int = 0
    duplicates: int = 0
    malformed: int = 0
    by_type: Counter = field(default_factory=Counter)
    hosts: set = field(default_factory=set)
    gaps_explained: int = 0
    gaps_unexplained: int = 0
    missing_explained: int = 0
    missing_unexplained: int = 0


class FleetConsumer:
    def __init__(self, source, windows: FleetWindows, ledger: Ledger, records: FleetRecords, emit,
                 lateness_s: float = 30.0, stats_interval_s: float = 60.0, bounded: bool = False):
        self.source = source
        self.windows = windows
        self.ledger = ledger
        self.records = records
        self.emit = emit  # a fleet record -> its output (JSON lines, the table)
        self.lateness_s = lateness_s
        self.stats_interval_s = stats_interval_s
        self.bounded = bounded
        self.stats = StreamStats()
        self.warn = lambda line: print(line, file=sys.stderr, flush=True)

    def take(self, value: bytes | None) -> None:
        """One Kafka record's value."""
        st = self.stats
        st.consumed += 1
        try:
            rec = orjson.loads(value)
            host, run_id, seq, rtype = rec["host"], rec["run_id"], rec["seq"], rec["type"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            st.malformed += 1
            return
        if not self.ledger.seen(host, run_id, seq):
            st.duplicates += 1
            return
        st.by_type[rtype] += 1
        st.hosts.add(host)
        if rtype == "summary":
            self.windows.add_summary(rec)
        elif rtype == "diagnosis":
            self.windows.add_diagnosis(rec)
        elif rtype == "lost" and rec.get("stage") == "sink":
            self.ledger.note_lost(host, run_id, rec)

    def run(self, stop, duration: float | None = None) -> None:
        """Consumes until `stop` is set, `duration` passes or a bounded review ends."""
        t0 = time.monotonic()
        next_settle = t0 + SETTLE_EVERY_S
        quiet_since, next_trouble, troubled = t0, t0, False
        next_stats = t0 + self.stats_interval_s if self.stats_interval_s else None
        while not stop.is_set():
            batch = self.source.poll(200)
            for r in batch:
                self.take(r.value)
            now = time.monotonic()
            self._close(self.windows.excess())
            if not self.bounded:
                self._close(self.windows.due(self.windows.watermark, self.lateness_s))
                if not batch:  # caught up: the wall clock moves the windows on
                    self._close(self.windows.due(time.time(), self.lateness_s))
            if now >= next_settle:
                next_settle = now + SETTLE_EVERY_S
                self._gaps(self.ledger.settle(now))
            if batch:
                quiet_since = now
                if troubled:
                    troubled = False
                    self.warn("connscope: fleet: reading again")
            elif now - quiet_since >= TROUBLE_AFTER_S and now >= next_trouble:
                next_trouble = now + TROUBLE_EVERY_S
                line = self.source.trouble_line()
                if line is not None:  # nothing comes, and kafka-python says why
                    troubled = True
                    self.warn(f"connscope: fleet: {line}")
            if next_stats is not None and now >= next_stats:
                next_stats = now + self.stats_interval_s
                self.emit(self.records.stream(self.stream_fields(), final=False))
            if self.source.at_end() or (duration is not None and now - t0 >= duration):
                break
        self._close(self.windows.drain())
        self._gaps(self.ledger.settle(time.monotonic(), final=True))
        self.emit(self.records.stream(self.stream_fields(), final=True))

    def _close(self, buckets) -> None:
        for b in buckets:
            self.emit(self.records.window(b))

    def _gaps(self, gaps) -> None:
        st = self.stats
        for gap in gaps:
            if gap.explained:
                st.gaps_explained += 1
                st.missing_explained += gap.missing
            else:
                st.gaps_unexplained += 1
                st.missing_unexplained += gap.missing
            self.emit(self.records.gap(gap))

    def stream_fields(self) -> dict:
        st = self.stats
        return {
            "consumed": st.consumed, "duplicates": st.duplicates, "malformed": st.malformed,
            "records": dict(st.by_type), "agent_hosts": len(st.hosts), "agent_runs": len(self.ledger.runs),
            "gaps_explained": st.gaps_explained, "gaps_unexplained": st.gaps_unexplained,
            "missing_explained": st.missing_explained, "missing_unexplained": st.missing_unexplained,
            "late_records": self.ledger.late, "late_summaries": self.windows.late,
            "runs_forgotten": self.ledger.runs_dropped,
        }
