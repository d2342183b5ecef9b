"""KafkaSink: the Sink interface (write, flush, close) over the delivery thread.

write() only serializes (the same JSON as the stdout sink, through orjson,
without the newline) and queues; the sink's own thread hands records to
kafka-python or to the spool (agent/sinks/kafka/delivery.py). flush() waits
a moment for that hand-over, so `take_losses()` right after it reports the
drops of the records written before it; the pipeline turns those into
`lost` records (stage "sink"), which the sink always accepts, even with a
full spool.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import orjson

from ...errors import ConnscopeError
from ...records.build import RECORD_TYPES
from .delivery import METADATA_WAIT_MS, PROBE_BACKOFF, Delivery
from .routing import make_batch_router, make_router
from .settings import KafkaSettings

INTAKE_MAX_BYTES = 32 << 20  # written, not yet routed: write() waits beyond this
FLUSH_WAIT_S = 0.5  # longest flush() waits for the sink thread, beyond a metadata wait
IDLE_WAIT_S = 0.05


class KafkaSink:
    """Records to Kafka, with an on-disk spool for what cannot be delivered yet.

    `spool_dir` (the service's state directory) keeps the spool across
    restarts; `warn(line)` receives one-line warnings (stderr by default).
    """

    def __init__(self, settings: KafkaSettings, spool_dir: str, warn=None):
        settings.validate()
        self.settings = settings
        self._route = make_router(settings)
        self._route_batch = make_batch_router(settings)
        self._cv = threading.Condition()
        # written batches: (topics, keys, values, lost flags or None, bytes)
        self._intake: list[tuple] = []
        self._intake_bytes = 0
        self._written = 0  # records accepted by write()
        self._routed = 0  # of those, records the thread has handed on
        self._taken_bytes = 0  # taken by the thread from the intake, not yet handed on
        self._done: deque = deque()  # wake-ups from kafka-python's thread: a flight's last record resolved
        self._stop = False
        self._error: BaseException | None = None
        self._connecting = False
        self._connect_at = 0.0
        self._connect_backoff = PROBE_BACKOFF[0]
        self._pending_producer: tuple | None = None
        self.delivery = Delivery(settings, spool_dir, self._notify, warn)
        self._thread = threading.Thread(target=self._main, name="connscope-kafka", daemon=True)
        self._thread.start()

    # --- the Sink interface (pipeline writer thread) ------------------------------
    def write(self, record: dict) -> None:
        value = orjson.dumps(record)
        topic, key = self._route(record)
        lost = record.get("type") == "lost"
        self._take(([topic], [key], [value], [True] if lost else None, len(value)), 1, lost)

    def write_encoded(self, lines: list[str], events, host: str) -> None:
        """A batch of connection records already JSON text (records/encode.py),
        with the events they came from (their type and pid route them)."""
        topics, keys = self._route_batch(host, RECORD_TYPES, events)
        values = [line.encode() for line in lines]
        self._take((topics, keys, values, None, sum(map(len, values))), len(values), False)

    def _take(self, chunk: tuple, count: int, lost: bool) -> None:
        with self._cv:
            self._check()
            while self._intake_bytes >= INTAKE_MAX_BYTES and not lost and not self._stop:
                self._cv.notify_all()
                self._cv.wait(0.1)  # the thread is behind (a blocking metadata wait): hold the writer
                self._check()
            self._intake.append(chunk)
            self._intake_bytes += chunk[4]
            self._written += count

    def flush(self) -> None:
        """Wakes the sink thread. Waits (briefly) for it to hand the records on
        only when the spool could overflow, so that `take_losses()` right after
        knows of every drop: a full spool is the only cause of one."""
        with self._cv:
            self._check()
            target = self._written
            self._cv.notify_all()
            room = self.settings.spool_max_bytes - self.delivery.backlog.spool.size_bytes
            pending = (self._intake_bytes + self._taken_bytes + self.delivery.memory_bytes
                       + 16 * (self._written - self._routed))
            if room > pending + (1 << 20):
                return
            # the thread may be in a metadata wait: outlast it, drops are at stake
            deadline = time.monotonic() + FLUSH_WAIT_S + METADATA_WAIT_MS / 1000
            while self._routed < target and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)

    def take_losses(self) -> list[tuple[int, str, int | None, int | None]]:
        """(count, reason, first seq, last seq) of records dropped since the
        last call, per reason; the seqs are the lowest and highest dropped
        where known (None otherwise).

        Empty while the spool's reserve for `lost` records is nearly used up:
        the counts then wait and go into a later, single report."""
        if self.delivery.reserve_left() < 16 << 10:
            return []
        total: dict[str, list] = {}
        losses = self.delivery.losses
        while losses:
            count, reason, first, last = losses.popleft()
            t = total.setdefault(reason, [0, first, last])
            t[0] += count
            t[1] = _merge(min, t[1], first)
            t[2] = _merge(max, t[2], last)
        return [(n, reason, first, last) for reason, (n, first, last) in total.items()]

    def close(self) -> None:
        """Flushes within flush_timeout_s, leaves the rest in the spool, fsyncs."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(self.settings.flush_timeout_s + METADATA_WAIT_MS / 1000 + 30)

    def stats(self) -> dict:
        """Delivery counters (for self-metrics): a consistent-enough snapshot."""
        d = self.delivery
        out = dict(vars(d.c))
        out.update(
            in_flight_records=d.inflight_records,
            memory_bytes=d.memory_bytes,
            memory_peak_bytes=d.memory_peak_bytes,
            in_flight_bytes=d.inflight_bytes,
            spool_bytes=d.spool_bytes(),
            state=("closed" if d.closed else "connecting" if d.producer is None
                   else "delivering" if d.healthy else "spooling"),
            last_error=d.last_error,
            trouble=d.health_line(),
        )
        return out

    def undelivered(self) -> bool:
        """After close(): did anything stay behind in the spool?"""
        return self.delivery.spool_bytes() > 0 or not self.delivery.healthy

    def _check(self) -> None:
        if self._error is not None:
            raise ConnscopeError(f"the Kafka sink stopped: {type(self._error).__name__}: {self._error}",
                                 "report this bug; the spool keeps what was not delivered") from self._error

    # --- the sink's thread ---------------------------------------------------------
    def _notify(self, event) -> None:
        """From kafka-python's I/O thread: a flight's last record resolved."""
        self._done.append(event)
        if len(self._done) == 1:
            with self._cv:
                self._cv.notify_all()

    def _clear_wakeups(self) -> None:
        """The wake-ups are taken: the delivery reads the futures themselves."""
        self._done.clear()

    def _main(self) -> None:
        d = self.delivery
        busy = False  # replay has more to hand over right away
        try:
            while True:
                with self._cv:
                    if not (self._intake or self._done or self._stop or busy):
                        self._cv.wait(IDLE_WAIT_S)
                    items, self._intake = self._intake, []
                    self._taken_bytes, self._intake_bytes = self._intake_bytes, 0
                    taken, stop = self._written, self._stop
                self._clear_wakeups()
                d.handle()
                self._connect()
                d.route_fresh(items)
                with self._cv:
                    self._routed, self._taken_bytes = taken, 0
                    self._cv.notify_all()
                if stop:
                    break
                busy = d.replay()
                d.housekeeping()
            d.shutdown(time.monotonic() + self.settings.flush_timeout_s, self._clear_wakeups)
        except BaseException as exc:  # a bug: make write() say so rather than block
            self._error = exc
            d.warn(f"connscope: kafka sink thread failed: {type(exc).__name__}: {exc}")
            with self._cv:
                self._cv.notify_all()
            try:
                d.sync()
            except Exception:
                pass

    def _connect(self) -> None:
        """Creates the producer on a helper thread: with api_version unset,
        kafka-python contacts a broker in its constructor (and blocks)."""
        d = self.delivery
        if self._pending_producer is not None:
            result, self._pending_producer = self._pending_producer, None
            self._connecting = False
            d.set_producer(*result)
            if result[0] is None:
                self._connect_at = time.monotonic() + self._connect_backoff
                self._connect_backoff = min(2 * self._connect_backoff, PROBE_BACKOFF[1])
        if d.producer is not None or self._connecting or time.monotonic() < self._connect_at:
            return
        self._connecting = True
        threading.Thread(target=self._make_producer, name="connscope-kafka-connect", daemon=True).start()

    def _make_producer(self) -> None:
        from kafka import KafkaProducer

        t0 = time.time()
        try:
            result = (KafkaProducer(**self.delivery.producer_config()), None, [])
        except Exception as exc:
            # the constructor talks to the bootstrap brokers on this thread
            result = (None, exc, self.delivery.log.since(t0, {threading.get_ident()}))
        with self._cv:
            if self._stop:  # too late: the sink is closing (or closed) without it
                if result[0] is not None:
                    result[0].close(timeout=0)
                return
            self._pending_producer = result
            self._cv.notify_all()


def _merge(pick, a, b):
    return b if a is None else a if b is None else pick(a, b)
