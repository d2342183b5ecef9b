"""Helpers for the Kafka sink tests: settings for the mock, a record feeder that
writes like the pipeline's writer, and the delivery check.

The feeder numbers records with the pipeline's own Emitter and, after each
flush, turns the sink's `take_losses()` into `lost` records exactly as
Pipeline.flush_sink does, so a loss report travels the same way it does in
the agent.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import orjson

from agent.pipeline import Emitter
from agent.records.build import RecordBuilder
from agent.sinks.kafka import KafkaSettings

from netlab import wait_until
from pure.factories import event
from schema import assert_valid

from .conftest import consume_all

HOST = "kafka-test-host"
RUN_ID = "0123456789abcdef0123456789abcdef"


def settings_for(cluster, **kw) -> KafkaSettings:
    """Settings for the mock: kafka-python must speak protocol 2.3 to it."""
    base = dict(bootstrap=cluster.bootstrap.split(","), api_version="2.3", topic="connscope",
                key="host_pid", linger_ms=5, flush_timeout_s=5.0)
    base.update(kw)
    return KafkaSettings(**base)


def event_variants(n: int = 512):
    """Connect and close events of n processes (pid 10000 + i), varied ports."""
    from agent.decode import layout as L
    out = []
    for i in range(n):
        kind = L.EV_CONNECT if i % 2 == 0 else L.EV_CLOSE
        out.append(event(pid=10000 + i, tid=10000 + i, sport=20000 + i, dport=8000 + i % 7, type=kind,
                         end_ns=1_500_000_000 if kind == L.EV_CLOSE else 0))
    return out


class Feeder:
    """Writes records into a sink as the pipeline writer does: batches, then
    flush, then the sink's losses as `lost` records (stage sink)."""

    def __init__(self, sink, pids: int = 512, run_id: str = RUN_ID):
        self.builder = RecordBuilder(host=HOST, run_id=run_id)
        self.emitter = Emitter(sink, self.builder)
        self.sink = sink
        self.events = event_variants(pids)
        self.sent: dict[tuple[str, int], bytes] = {}  # (run_id, seq) -> the JSON the sink must deliver
        self.lost_reports: list[dict] = []
        self._i = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rate = 0.0

    def _emit(self, rec: dict) -> None:
        self.emitter.emit(rec)
        self.sent[(rec["run_id"], rec["seq"])] = orjson.dumps(rec)

    def write(self, n: int) -> None:
        """n connection records, as the pipeline writes them (one encoded
        batch: records/encode.py, KafkaSink.write_encoded), then flush and
        report losses."""
        batch = [self.events[(self._i + k) % len(self.events)] for k in range(n)]
        first = self.emitter.seq + 1
        lines = self.emitter.emit_events(batch)
        for k, line in enumerate(lines):
            self.sent[(self.builder.run_id, first + k)] = line.encode()
            if self._i + k < len(self.events):  # each variant once; later ones differ only in seq
                assert_valid(orjson.loads(line))
        self._i += n
        self.flush()

    def flush(self) -> None:
        self.sink.flush()
        for count, reason, first, last in self.sink.take_losses():
            rec = self.builder.lost_record(count, "sink", reason, first, last)
            self._emit(rec)
            assert_valid(rec)
            self.lost_reports.append(rec)
        self.sink.flush()

    def start(self, per_s: int, chunk: int = 50) -> None:
        """Writes per_s records per second on a thread until stop()."""
        def run():
            t0 = time.monotonic()
            done = 0
            while not self._stop.is_set():
                self.write(chunk)
                done += chunk
                ahead = t0 + done / per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            self.rate = done / (time.monotonic() - t0)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    return wait_until(predicate, timeout, what, poll)


def check_delivered(cluster, topic: str, partitions: int, sent: dict[tuple[str, int], bytes], *,
                    validate_every: int = 1, timeout: float = 60.0, complete: bool = True) -> dict:
    """Consumes the topic and checks: every sent record arrived byte for byte
    (duplicates allowed: delivery is at least once; with complete=False some
    may be missing), nothing else arrived, each key's records are in seq
    order after de-duplication by (host, run_id, seq), and each key stays in
    one partition.

    Records are checked against schema v1: every one when validate_every is
    1, else every n-th plus every record that is not a connect/close (the
    others differ from a validated one only in seq). Returns
    {(run_id, seq): record}.
    """
    msgs = consume_all(cluster.bootstrap, topic, partitions, timeout=timeout)
    first: dict[tuple, dict] = {}
    order: dict[bytes, list[int]] = defaultdict(list)
    parts: dict[bytes, set[int]] = defaultdict(set)
    for i, m in enumerate(msgs):
        rec = orjson.loads(m.value)
        if validate_every == 1 or i % validate_every == 0 or rec["type"] not in ("connect", "close"):
            assert_valid(rec)
        ident = (rec["host"], rec["run_id"], rec["seq"])
        parts[m.key].add(m.partition)
        if ident in first:
            assert orjson.dumps(first[ident]) == m.value, f"two different records with id {ident}"
            continue
        first[ident] = rec
        order[(m.key, rec["run_id"])].append(rec["seq"])
        assert sent.get(ident[1:]) == m.value, f"{ident} arrived changed or was never sent"
    got = {ident[1:] for ident in first}
    missing = sorted(set(sent) - got)
    if complete:
        assert not missing, f"{len(missing)} of {len(sent)} records lost, e.g. {missing[:5]}"
    for (key, _), seqs in order.items():
        assert len(parts[key]) == 1, f"key {key!r} spread over partitions {parts[key]}"
        assert seqs == sorted(seqs), f"key {key!r} out of order: {_first_disorder(seqs)}"
    return {ident[1:]: rec for ident, rec in first.items()}


def _first_disorder(seqs: list[int]) -> str:
    for i in range(1, len(seqs)):
        if seqs[i] < seqs[i - 1]:
            return f"seq {seqs[i]} after {seqs[i - 1]} (position {i})"
    return "?"
