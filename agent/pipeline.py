"""From the kernel's buffer to the sink, with every loss counted.

Two threads. The reader polls the tracer, whose callback only decodes and
queues, and hands batches to a bounded queue; it never waits on the sink,
so a slow sink fills the user queue (counted as `lost`, stage "queue")
before it can back up into the kernel buffer. Summaries do not come from
records: the kernel counts every connection (bpf/aggregate.c), and at each
window's end the reader takes those counts, keeps the rows the filters let
through, and hands them to the aggregator; records only name processes
(aggregator.note). What records the kernel sends at all follows the policy
(knobs: all, failures only, none; sampling; failure folding), so in service
mode no Python runs per successful connection. The writer builds records,
numbers them (`seq`) and writes them. Kernel-side drops are read from the
kernel's counters every second and reported as `lost`, stage "kernel".
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .aggregate.diagnose import Diagnoser
from .aggregate.window import WindowAggregator
from .decode import layout
from .decode.aggregates import rows as kernel_rows
from .decode.events import ConnEvent, decode_state
from .decode.finalize import finalize
from .filters import EventFilter, is_failure
from .records.aggregates import diagnosis_record, summary_records
from .records.build import RECORD_TYPES, RecordBuilder
from .records.encode import RecordEncoder
from .sinks.base import Sink, SinkClosed


def _tune_gc() -> None:
    """The event path allocates a few short-lived tuples and strings per record,
    none in cycles, and at tens of thousands of records a second CPython's
    cyclic collector, triggered every 700 allocations, ran often and each
    full pass walked every object the start-up made (BCC, clang's results,
    modules). Those are frozen (gc.freeze: never scanned again) and the
    first generation collects every 50,000 allocations instead."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


# Kernel counters that mean records were lost, and the reason reported.
KERNEL_LOSSES = {
    "lost_buffer_full": "buffer_full",
    "lost_perf": "perf_buffer_lost",
    "lost_state_map_full": "state_map_full",
    "aggregate_map_full": "aggregate_map_full",
    "malformed": "malformed",
}


class Emitter:
    """Numbers records (+1 per record written) and writes them.

    Connection records go as a batch: to a sink that takes encoded records
    (write_encoded: JSON lines, Kafka) through the template encoder, with
    `seq` assigned per batch; to the others (tables) as dicts."""

    def __init__(self, sink: Sink, builder: RecordBuilder):
        self.sink = sink
        self.builder = builder
        self._encoder: RecordEncoder | None = None
        self.seq = 0
        self.by_type: Counter[str] = Counter()

    def emit(self, record: dict) -> None:
        self.seq += 1
        record["seq"] = self.seq
        self.by_type[record["type"]] += 1
        self.sink.write(record)

    def emit_events(self, events: list[ConnEvent]) -> list[str] | None:
        """Writes connection records; returns their JSON text when they went
        encoded (what the sink got, for tests and replay tools)."""
        if not events:
            return None
        write_encoded = getattr(self.sink, "write_encoded", None)  # a reload may swap the sink
        if write_encoded is None:
            build, emit = self.builder.from_event, self.emit
            for ev in events:
                emit(build(ev))
            return None
        if self._encoder is None:
            self._encoder = RecordEncoder(self.builder)
        lines = self._encoder.encode(events, self.seq + 1)
        self.seq += len(lines)
        write_encoded(lines, events, self.builder.host)
        return lines

    def counts(self) -> dict[str, int]:
        """Records written, by type."""
        out = Counter(self.by_type)
        if self._encoder is not None:  # it counts what it encoded, by EV_* type
            for kind, n in enumerate(self._encoder.by_type):
                if n:
                    out[RECORD_TYPES[kind]] += n
        return dict(out)


@dataclass
class PipelineStats:
    queue_lost: int = 0
    kernel_lost: Counter = field(default_factory=Counter)
    sink_lost: Counter = field(default_factory=Counter)  # reason -> records the sink dropped


@dataclass(frozen=True)
class Policy:
    """What the pipeline keeps. Immutable: a change (SIGHUP, overload) is a
    new Policy given to Pipeline.set_policy, never an edit in place."""

    filter: EventFilter
    connections: bool = True  # per-connection records, or only aggregates
    failures_always: bool = False  # failures even when connections is off
    # Overload sampling (agent/service/overload.py): the kernel sends one in
    # N per-connection records that are not failures; summaries stay exact
    # because the kernel counts every connection before sampling.
    keep_one_in: int = 1
    # Failure records per (process, destination) and window the kernel sends
    # before it only counts the rest (`failure_records_folded`); 0 = all.
    fold_after: int = 0
    # One record per connection end (and failed attempts): no connect or
    # accept record of a connection that established.
    ends: bool = False

    @property
    def records(self) -> int:
        """Which records the kernel sends (knobs[KNOB_RECORDS])."""
        if self.connections:
            if self.filter.failures_only:
                return layout.REC_FAILURES
            return layout.REC_ENDS if self.ends else layout.REC_ALL
        return layout.REC_FAILURES if self.failures_always else layout.REC_NONE


class Pipeline:
    POLL_MS = 100
    LOSS_CHECK_S = 1.0
    REAP_S = 5.0

    def __init__(self, tracer, builder: RecordBuilder, sink: Sink, event_filter: EventFilter | None = None,
                 queue_max: int = 50_000, aggregator: WindowAggregator | None = None,
                 diagnoser: Diagnoser | None = None, connections: bool = True, port_usage=None,
                 failures_always: bool = False, fold_after: int = 0, socket_watch=None, socket_scan_s: float = 10.0):
        self.tracer = tracer
        self.builder = builder
        self.emitter = Emitter(sink, builder)
        # one record per connection end when the builder puts the connect's
        # fields on the close (agent.connection_records = "ends")
        self.policy = Policy(event_filter or EventFilter(), connections, failures_always, fold_after=fold_after,
                             ends=builder.connect_on_close)
        self.queue_max = queue_max
        self.stats = PipelineStats()
        self._q: queue.Queue = queue.Queue()
        self._queued = 0  # events in _q; bounded by queue_max
        self._lock = threading.Lock()
        self._last_counters = {k: 0 for k in KERNEL_LOSSES}
        self._last_misses: dict[str, int] = {}
        self.reaped = 0
        self.aggregator = aggregator
        self.diagnoser = diagnoser
        self.port_usage = port_usage  # WindowResult -> {(proc, dest): usage}, for port_exhaustion_risk
        # live sockets (aggregate/sockets.py): idle connections, backlogs, accept queues
        self.socket_watch = socket_watch
        self.socket_scan_ns = int(socket_scan_s * 1e9) or None  # None: no scans (agent.socket_scan = 0)
        self._last_scan_ns = 0
        # called with (WindowResult, port usage, findings) at each window's end, on the reader thread
        self.on_window = None
        self.stop = threading.Event()
        self.stop_record: dict | None = None  # the last record of a run, once emitted
        self.sink_closed = False
        self._set_knobs()

    # --- reader thread ---------------------------------------------------
    def set_policy(self, policy: "Policy") -> None:
        """Swaps what the pipeline keeps, whole (reload, overload): the reader
        and the writer each read the policy once per batch, so a batch never
        sees half of a change; the kernel's knobs follow at once."""
        self.policy = policy
        self._set_knobs()

    def _set_knobs(self) -> None:
        knobs, policy = self.tracer.knobs, self.policy
        knobs.set(layout.KNOB_RECORDS, policy.records)
        knobs.set(layout.KNOB_KEEP_ONE_IN, policy.keep_one_in)
        knobs.set(layout.KNOB_FOLD_AFTER, policy.fold_after)
        if self.aggregator is not None:
            knobs.set(layout.KNOB_SHORT_LIFETIME_NS, self.aggregator.thresholds.short_lifetime_us * 1000)

    @property
    def sampled_out(self) -> int:
        """Records the kernel did not send because of overload sampling."""
        return self.tracer.counters()["sampled_out"]

    def _put_events(self, events: list[ConnEvent]) -> None:
        policy = self.policy
        if self.aggregator is not None:
            note = self.aggregator.note
            for ev in events:
                note(ev)
        # The kernel sent only what the policy asks for, and a process's
        # first record (for its names), which is dropped here.
        if not policy.connections:
            if not policy.failures_always:
                return
            events = [ev for ev in events if is_failure(ev)]
        elif policy.ends:
            close = layout.EV_CLOSE
            events = [ev for ev in events if ev.type == close or is_failure(ev)]
        if not events:
            return
        with self._lock:
            if self._queued + len(events) > self.queue_max:
                self.stats.queue_lost += len(events)
                self._q.put(self.builder.lost_record(len(events), "queue", "queue_full"))
                return
            self._queued += len(events)
        self._q.put(events)

    @property
    def queue_depth(self) -> int:
        return self._queued

    def _check_kernel_losses(self) -> None:
        counters = self.tracer.counters()
        for key, reason in KERNEL_LOSSES.items():
            delta = counters[key] - self._last_counters[key]
            if delta > 0:
                self._last_counters[key] = counters[key]
                self.stats.kernel_lost[reason] += delta
                if self.aggregator is not None:
                    self.aggregator.kernel_lost += delta
                self._q.put(self.builder.lost_record(delta, "kernel", reason))
        for prog, misses in self.tracer.recursion_misses().items():
            delta = misses - self._last_misses.get(prog, 0)
            if delta > 0:
                self._last_misses[prog] = misses
                self.stats.kernel_lost["recursion_miss"] += delta
                rec = self.builder.lost_record(delta, "kernel", "recursion_miss")
                rec["program"] = prog
                self._q.put(rec)

    def _close_window(self, now_ns: int) -> None:
        rows = [r for r in kernel_rows(*self.tracer.take_aggregates()) if self.policy.filter.match_row(r)]
        self.aggregator.add_kernel(rows)
        result = self.aggregator.close(now_ns)
        self._set_knobs()  # a reload's thresholds, from the next window on
        usage = self.port_usage(result) if self.port_usage else None
        for rec in summary_records(self.builder, result, usage):
            self._q.put(rec)
        findings = []
        if self.diagnoser is not None:
            live = None
            if self.socket_watch is not None and self.socket_scan_ns is not None:
                # scanned now too, so that this window's clients' timeouts
                # meet the accept queues of namespaces noted this window
                self._scan_sockets(now_ns)
                live = self.socket_watch.take()
            findings = self.diagnoser.evaluate(result, usage, live)
            for finding in findings:
                self._q.put(diagnosis_record(self.builder, result, finding))
        if self.on_window is not None:  # Prometheus counters (metrics/connections.py)
            self.on_window(result, usage, findings)

    def _scan_sockets(self, now_ns: int) -> None:
        self._last_scan_ns = now_ns
        self.socket_watch.scan()

    def _reap(self) -> None:
        now = time.monotonic_ns()
        events = [finalize(decode_state(raw), now) for raw in self.tracer.take_stale_closing(self.REAP_S)]
        if events:
            self.reaped += len(events)
            if self.aggregator is not None:  # the kernel never counted these
                match = self.policy.filter.match
                for ev in events:
                    if match(ev):
                        self.aggregator.add(ev)
            self._put_events(events)

    def _read(self) -> None:
        next_check = time.monotonic() + self.LOSS_CHECK_S
        next_reap = time.monotonic() + self.REAP_S
        try:
            while not self.stop.is_set():
                events = self.tracer.poll(self.POLL_MS)
                if events:
                    self._put_events(events)
                if time.monotonic() >= next_check:
                    self._check_kernel_losses()
                    next_check = time.monotonic() + self.LOSS_CHECK_S
                if time.monotonic() >= next_reap:
                    self._reap()
                    next_reap = time.monotonic() + self.REAP_S
                if (self.socket_watch is not None and self.socket_scan_ns is not None
                        and time.monotonic_ns() - self._last_scan_ns >= self.socket_scan_ns):
                    self._scan_sockets(time.monotonic_ns())
                if self.aggregator is not None and self.aggregator.due(time.monotonic_ns()):
                    self._check_kernel_losses()
                    self._close_window(time.monotonic_ns())
            # Drain what the kernel already handed over, then account.
            while True:
                events = self.tracer.poll(0)
                if not events:
                    break
                self._put_events(events)
            self._check_kernel_losses()
            if self.aggregator is not None:  # the last, partial window
                self._close_window(time.monotonic_ns())
        finally:
            self._q.put(None)

    # --- writer (caller's thread) ------------------------------------------
    def _write(self, item) -> None:
        if isinstance(item, dict):
            self.emitter.emit(item)
            return
        with self._lock:
            self._queued -= len(item)
        event_filter = self.policy.filter
        if not event_filter.empty:
            item = [ev for ev in item if event_filter.match(ev)]
        self.emitter.emit_events(item)

    def flush_sink(self) -> None:
        """Flushes, then reports what the sink dropped as `lost` records (stage "sink").

        A sink that can drop (Kafka with a full spool) has `take_losses()`;
        it must accept these `lost` records even when it drops others, so
        the report of a loss is itself delivered.
        """
        sink = self.emitter.sink
        sink.flush()
        take = getattr(sink, "take_losses", None)
        if take is None:
            return
        losses = take()
        for count, reason, first, last in losses:
            self.stats.sink_lost[reason] += count
            self.emitter.emit(self.builder.lost_record(count, "sink", reason, first, last))
        if losses:
            sink.flush()

    def run(self, duration: float | None = None, start_fields: dict | None = None, tick=None) -> None:
        """Emits the start record, streams until stop() or duration, then the stop record.

        `tick(now)` runs on this (the writer's) thread at least every 0.2 s:
        the service uses it for watchdog pings, status records and reloads.
        """
        self.emitter.emit(self.builder.agent_record("start", **(start_fields or {})))
        self.emitter.sink.flush()
        _tune_gc()
        reader = threading.Thread(target=self._read, name="connscope-reader", daemon=True)
        reader.start()
        deadline = time.monotonic() + duration if duration else None
        try:
            while True:
                timeout = 0.2
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.stop.set()
                    timeout = max(0.0, min(timeout, left))
                if tick is not None:
                    tick(time.monotonic())
                try:
                    item = self._q.get(timeout=timeout)
                except queue.Empty:
                    # idle: what tick() emitted (status, sampling) and what the
                    # sink dropped meanwhile must not wait for the next event
                    self.flush_sink()
                    continue
                if item is None:
                    break
                self._write(item)
                if self._q.empty():
                    self.flush_sink()
        except SinkClosed:
            self.sink_closed = True
            self.stop.set()
        finally:
            self.stop.set()
            reader.join(timeout=5)
        if self.sink_closed:
            return
        while not self._q.empty():
            item = self._q.get_nowait()
            if item is not None:
                self._write(item)
        try:
            self.flush_sink()  # its losses belong in the stop record
            self.stop_record = self.builder.agent_record("stop", **self.summary())
            self.emitter.emit(self.stop_record)
            self.flush_sink()
        except SinkClosed:
            self.sink_closed = True

    def summary(self) -> dict:
        return {
            "records": self.emitter.counts(),
            "lost": {"queue": self.stats.queue_lost, "kernel": dict(self.stats.kernel_lost),
                     "sink": dict(self.stats.sink_lost)},
            "sampled_out": self.sampled_out,
            "reaped": self.reaped,
            "recursion_misses": {k: v for k, v in self.tracer.skipped_runs().items() if v},
            "kernel_counters": self.tracer.counters(),
        }
