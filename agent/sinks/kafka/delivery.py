"""The Kafka sink's delivery logic. Runs only on the sink's own thread.

Four sources of records, oldest first:
  retry   - records that were handed to the producer and failed (or were
            still unacknowledged at a stop); an on-disk spool
  backlog - records that could not be handed over while brokers failed, or
            that overflowed the memory stage; an on-disk spool
  memory  - records written while brokers answer, waiting for room in
            flight; bounded by `memory_max_bytes`, never on disk
  fresh   - records just written
A source is handed over only when the ones before it are fully handed over,
so records reach the producer in the order they were written; kafka-python
(idempotent, at most 5 requests in flight) keeps that order per partition.
While the spools hold unread records the memory stage is empty: fresh
records go behind them, to the backlog. A record that fails goes back to a
spool and is sent again: delivery is at least once, and a retried record can
arrive after newer ones (consumers order and de-duplicate by (host, run_id,
seq)).

Records are handed over and accounted in flights (one hand-over of up to a
batch, from one source): the producer's futures are kept in order and read
when the flight's last one resolves (one callback per flight, not per
record), or on the thread's next pass.

kafka-python 3 buffers without bound while brokers are away, so at most
`max_in_flight_bytes` are handed to it and not yet acknowledged; the rest
waits in memory, or in the backlog. Spool records are committed (and their
segments deleted) only once acknowledged, so a crash or SIGKILL replays
them.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque

import orjson
from kafka import errors as kerr

from ...errors import ConnscopeError
from ..spool import Spool
from .client import RecoveringClient, close_now
from .explain import KafkaLog, explain, is_record_error
from .flight import Batch, Counters, Flight, Source
from .routing import make_router
from .settings import KafkaSettings

RESERVE = 256 << 10  # spool headroom that only `lost` records may use
REPLAY_BATCH = 500  # records read from a spool at a time
REPLAY_ROUND = 500  # records replayed before the thread looks at new ones again
METADATA_WAIT_MS = 2000  # longest a send blocks the sink thread for topic metadata
PROBE_BACKOFF = (0.5, 5.0)  # seconds between probes while brokers fail, doubling
SYNC_EVERY_S = 1.0  # fsync spools written to, at most this often
STALL_S = 5.0  # records in flight and none resolved this long: the memory stage goes to disk
WEDGED_SLACK_S = 10.0  # beyond kafka-python's own timeouts: a producer silent this long is replaced


def _open_spool(path: str, max_bytes: int) -> Spool:
    try:
        return Spool(path, max_bytes)
    except OSError as err:
        raise ConnscopeError(f"cannot use the Kafka spool directory {path}: {err.strerror}",
                             "set agent.state_dir to a writable directory") from None


class Delivery:
    def __init__(self, settings: KafkaSettings, spool_dir: str, notify, warn=None):
        self.settings = settings
        self.spool_dir = spool_dir
        self.notify = notify  # callable(event): wakes the sink thread from kafka-python's thread
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self.log = KafkaLog.install()
        self.route = make_router(settings)
        retry = _open_spool(os.path.join(spool_dir, "retry"), 2 * settings.max_in_flight_bytes)
        backlog = _open_spool(os.path.join(spool_dir, "backlog"), settings.spool_max_bytes)
        # an empty spool has nothing to replay: fresh records need not wait behind it
        self.retry = Source("retry", retry, retry.committed, unread=retry.size_bytes > 0)
        self.backlog = Source("backlog", backlog, backlog.committed, unread=backlog.size_bytes > 0)
        self.c = Counters()
        # (count, reason, first seq, last seq or None), drained by the writer
        self.losses: deque[tuple[int, str, int | None, int | None]] = deque()
        self.last_error: str | None = None
        self.producer = None
        self.healthy = True
        self.closed = False
        self.flights: deque[Flight] = deque()  # handed over, not all settled; in hand-over order
        self.inflight_bytes = 0
        self.inflight_records = 0
        self._replays_inflight = 0  # of those, records handed from a spool
        # memory stage: (topics, keys, values, lost flags or None, bytes) per written batch
        self.memory: deque[tuple] = deque()
        self.memory_bytes = 0
        self.memory_peak_bytes = 0  # the most the memory stage held after a hand-over
        self._held: list[bytes] = []  # `lost` records not even the reserve could hold
        self._probe_at = 0.0
        self._backoff = PROBE_BACKOFF[0]
        self._corrupt_seen = {s.name: 0 for s in (self.retry, self.backlog)}
        self._dirty = False
        self._synced = time.monotonic()
        self._dropping = False
        self._warned: tuple[str, float] | None = None
        self.failing_since: float | None = None  # monotonic: when delivery last stopped working
        self._next_report = 0.0
        self._replay: tuple[int, float] | None = None  # (replayed count, time) when delivery came back
        self._log_mark = time.time()  # kafka-python's messages before this are about older trouble
        self._progress_at = time.monotonic()  # the producer last resolved a record (or got its first)
        conf = settings.producer_config()
        self._wedged_after = (conf["delivery_timeout_ms"] + conf["request_timeout_ms"]) / 1000 + WEDGED_SLACK_S

    # --- producer --------------------------------------------------------------
    def producer_config(self) -> dict:
        conf = self.settings.producer_config()
        conf.update(
            client_id="connscope",
            max_block_ms=METADATA_WAIT_MS,
            max_request_size=max(1 << 20, self.settings.batch_size),
            retry_backoff_ms=100,
            reconnect_backoff_ms=100,
            reconnect_backoff_max_ms=1000,  # a broker that comes back is found within a second
            bootstrap_timeout_ms=min(self.settings.request_timeout_ms, 5000),
            metrics_enabled=False,
            kafka_client=RecoveringClient,
        )
        return conf

    def set_producer(self, producer, error: BaseException | None, log_lines: list[str]) -> None:
        """The result of a connection attempt (made on a helper thread)."""
        if producer is not None:
            self.producer = producer
            return
        self.trouble(error, log_lines)

    # --- state -----------------------------------------------------------------
    def trouble(self, exc: BaseException | None, log_lines: list[str] | None = None, topic: str | None = None) -> None:
        """Delivery failed: spool until a probe gets through."""
        if log_lines is None:  # the producer's messages since delivery last worked
            # its network thread, and this one (send() waits for metadata here)
            sender = getattr(self.producer, "_sender", None)
            mine = {threading.get_ident()} | ({sender.ident} if sender is not None else set())
            log_lines = self.log.since(self._log_mark, mine)
        msg = explain(exc, log_lines, self.settings.bootstrap, topic or self.settings.topics()[0])
        self.last_error = msg
        was, self.healthy = self.healthy, False
        now = time.monotonic()
        if was:
            self.failing_since = now
            self._next_report = now + self.settings.trouble_report_s
            self._replay = None
        self._probe_at = now + self._backoff
        self._backoff = min(self._backoff * 2, PROBE_BACKOFF[1])
        if was or self._warned is None or self._warned[0] != msg and now - self._warned[1] > 60:
            self._warned = (msg, now)
            self.warn(f"connscope: {msg}; records wait in the spool {self.spool_dir}")

    def _recovered(self) -> None:
        if not self.healthy:
            self.healthy = True
            self._backoff = PROBE_BACKOFF[0]
            self._log_mark = time.time()
            now = time.monotonic()
            failed_for = now - self.failing_since if self.failing_since is not None else 0.0
            self.failing_since = None
            waiting = self.spool_bytes()
            self.warn(f"connscope: kafka: delivering again after {_duration(failed_for)} of failures; "
                      f"replaying {waiting} spooled bytes")
            self._replay = (self.c.replayed, now)

    def health_line(self) -> str | None:
        """While delivery fails: for how long, how full the spool is, the last
        error and its fix; None while it works."""
        if self.failing_since is None:
            return None
        size, limit = self.spool_bytes(), self.settings.spool_max_bytes
        error = (self.last_error or "unknown error").removeprefix("kafka: ")
        fix = "" if "(fix:" in error else " (fix: check the brokers and kafka.bootstrap)"
        return (f"kafka: delivery failing for {_duration(time.monotonic() - self.failing_since)}; spool "
                f"{_mib(size)} of {_mib(limit)} ({100 * size / limit:.1f}%) in {self.spool_dir}; "
                f"last error: {error}{fix}")

    def _report(self) -> None:
        """A line every trouble_report_s while delivery fails, and one when a
        replay after recovery is done (the journal shows both)."""
        now = time.monotonic()
        if self.failing_since is not None and now >= self._next_report:
            self._next_report = now + self.settings.trouble_report_s
            self.warn(f"connscope: {self.health_line()}")
        if self._replay is not None and self.healthy and not self._unread() and not self._replays_inflight:
            count, since = self._replay
            self._replay = None
            self.warn(f"connscope: kafka: replay done: {self.c.replayed - count} spooled records delivered "
                      f"in {_duration(now - since)}")

    def spool_bytes(self) -> int:
        return self.retry.spool.size_bytes + self.backlog.spool.size_bytes

    def reserve_left(self) -> int:
        return self.settings.spool_max_bytes + RESERVE - self.backlog.spool.size_bytes

    def _unread(self) -> bool:
        return self.retry.unread or self.backlog.unread or bool(self._held)

    # --- sending ---------------------------------------------------------------
    def _hand_over(self, topics: list[str], keys: list[bytes], values: list[bytes],
                   src: Source | None = None, batch: Batch | None = None) -> int:
        """Hands records to the producer, in order, as one flight; returns how
        many it took. A send() that raises stops the hand-over (delivery
        trouble) unless the error is the record's own (it is rejected)."""
        send = self.producer.send
        futures: list = []
        append = futures.append
        taken = size = 0
        exc = None
        for topic, key, value in zip(topics, keys, values):
            try:
                append(send(topic, value=value, key=key))
            except Exception as err:  # metadata timeout, authorization, a record too large...
                if is_record_error(err):
                    self._reject(err)
                    taken += 1
                    append(None)
                    continue
                exc = err
                break
            taken += 1
            size += len(value) + len(key)
        if futures:
            if not self.flights:
                self._progress_at = time.monotonic()
            n = len(futures)
            last = next((f for f in reversed(futures) if f is not None), None)
            self.flights.append(Flight(futures, values[:n], size, src, batch))
            self.inflight_bytes += size
            self.inflight_records += n
            self._replays_inflight += n if src is not None else 0
            self.c.handed += n
            if last is not None:
                last.add_both(self._on_done)  # the flight's last record: wake the thread
        if exc is not None:
            self.trouble(exc, topic=topics[taken])
        return taken

    def _on_done(self, _result) -> None:  # kafka-python's I/O thread
        self.notify(True)

    def _reject(self, exc: BaseException) -> None:
        self.c.rejected += 1
        self.losses.append((1, "rejected", None, None))
        self.last_error = explain(exc, [], self.settings.bootstrap)

    # --- acknowledgements --------------------------------------------------------
    def handle(self, failing: BaseException | None = None) -> None:
        """Reads the futures of the flights, oldest first, as far as they resolved.
        `failing` fails every unresolved one with that error (a wedged producer)."""
        if self.closed:
            return
        first_error = None
        progressed = False
        while self.flights:
            flight = self.flights[0]
            futures = flight.futures
            i, n = flight.settled, len(futures)
            failed = flight.failed
            while i < n:
                fut = futures[i]
                if fut is not None:
                    if not fut.is_done:
                        if failing is None:
                            break
                        failed.append(i)
                    elif fut.exception is not None:
                        failed.append(i)
                i += 1
            if i > flight.settled:
                progressed = True
            flight.settled = i
            if i < n:
                break
            self.flights.popleft()
            first_error = self._settle_flight(flight, failing) or first_error
        if progressed:
            self._progress_at = time.monotonic()
        if first_error is not None:
            self.trouble(first_error)
        self._settle(self.retry)
        self._settle(self.backlog)

    def _settle_flight(self, flight: Flight, failing: BaseException | None) -> BaseException | None:
        """Counts a flight whose futures all resolved; fresh records that failed
        go to the retry spool; a replay batch with a failure rewinds its source."""
        futures = flight.futures
        n = len(futures)
        self.inflight_bytes -= flight.size
        self.inflight_records -= n
        src = flight.src
        if src is not None:
            self._replays_inflight -= n
        retry: list[bytes] = []
        first_error = None
        for i in flight.failed:
            fut = futures[i]
            exc = fut.exception if fut.is_done else failing
            if is_record_error(exc):
                self._reject(exc)
            else:
                self.c.failed += 1
                first_error = first_error or exc
                retry.append(flight.values[i])
        acked = n - len(flight.failed) - futures.count(None)
        self.c.acked += acked
        if acked:
            self._recovered()
        if src is None:
            if retry:
                self._to_retry(retry)
        else:
            self.c.replayed += acked
            flight.batch.outstanding -= n
            if retry:
                flight.batch.failed = src.failed = True
        return first_error

    def _to_retry(self, values: list[bytes]) -> None:
        n = self.retry.spool.append_many(values, over=RESERVE)
        self.c.spooled += n
        self.retry.unread = True
        self._dirty = True
        if n < len(values):  # cannot happen while the retry spool holds only what was in flight
            self._spool(values[n:], [False] * (len(values) - n))

    def _settle(self, src: Source) -> None:
        """Commits acknowledged batches in order; rewinds after a failure."""
        while src.batches and src.batches[0].outstanding == 0 and not src.batches[0].failed:
            src.spool.commit(src.batches.popleft().cursor)
        if src.failed and all(b.outstanding == 0 for b in src.batches):
            src.batches.clear()
            src.ahead = src.spool.committed
            src.unread = True
            src.failed = False

    # --- fresh records -------------------------------------------------------------
    def route_fresh(self, chunks: list[tuple]) -> None:
        """Batches just written, each (topics, keys, values, lost flags or None,
        bytes): into the memory stage, and from it to the producer while there
        is room in flight. To the backlog spool instead while no producer is
        connected, brokers fail or older records wait there, and when the
        memory stage is over its bound (all of it then, oldest first, so that
        order holds): memory only ever holds what waits on brokers that
        answer."""
        memory = self.memory
        for chunk in chunks:
            memory.append(chunk)
            self.memory_bytes += chunk[4]
        if not memory:
            return
        if self.producer is None or not self.healthy or self._unread() or self._stalled():
            self._spill()
            return
        self._hand_memory(self.settings.max_in_flight_bytes)
        # what had to wait for room in flight: how close memory_max_bytes came
        self.memory_peak_bytes = max(self.memory_peak_bytes, self.memory_bytes)
        if not self.healthy or self.memory_bytes > self.settings.memory_max_bytes:
            self._spill()

    def _hand_memory(self, limit: float, deadline: float = math.inf) -> None:
        """The memory stage to the producer, oldest first, while there is room
        in flight (`limit` bytes), delivery works and `deadline` (monotonic)
        is ahead. A batch that trouble cut short keeps its rest at the front."""
        memory = self.memory
        while memory and self.inflight_bytes < limit and self.healthy and time.monotonic() < deadline:
            topics, keys, values, lost, size = memory.popleft()
            self.memory_bytes -= size
            taken = self._hand_over(topics, keys, values)
            if taken < len(values):
                rest = (topics[taken:], keys[taken:], values[taken:], lost[taken:] if lost else None,
                        sum(map(len, values[taken:])))
                memory.appendleft(rest)
                self.memory_bytes += rest[4]
                break

    def _stalled(self) -> bool:
        """Records in flight and none resolved for STALL_S (long enough that a
        loaded machine's slow acknowledgement is not one): brokers may be
        gone without an error yet (kafka-python retries until its delivery
        timeout). What waits in memory then goes to disk, where a crash
        cannot take it."""
        return bool(self.flights) and time.monotonic() - self._progress_at > STALL_S

    def _spill(self) -> None:
        """The memory stage, oldest first, to the backlog spool."""
        while self.memory:
            _topics, _keys, values, lost, _size = self.memory.popleft()
            self._spool(values, lost or [False] * len(values))
        self.memory_bytes = 0

    def _spool(self, values: list[bytes], lost: list[bool]) -> None:
        bl = self.backlog
        if self._held:
            n = bl.spool.append_many(self._held, over=RESERVE)
            self.c.spooled += n
            self._held = self._held[n:]
        n = 0 if self._held else bl.spool.append_many(values)
        self.c.spooled += n
        dropped, seqs = 0, []
        for value, is_lost in zip(values[n:], lost[n:]):
            if not is_lost:
                dropped += 1
                seqs.append(seq_of(value))
            elif not self._held and bl.spool.append(value, over=RESERVE):
                self.c.spooled += 1
            else:
                self._held.append(value)  # delivered once the spool has room again
        if n or len(values) > dropped:
            bl.unread = True
            self._dirty = True
        if dropped:
            self.c.dropped += dropped
            known = [q for q in seqs if q is not None]
            self.losses.append((dropped, "spool_full", min(known, default=None), max(known, default=None)))
            if not self._dropping:
                self.warn(f"connscope: kafka: the spool is full ({self.settings.spool_max_bytes} bytes): dropping "
                          "records, each counted in a lost record (fix: raise kafka.spool_max_bytes)")
        self._dropping = bool(dropped)

    # --- replay --------------------------------------------------------------------
    def replay(self) -> bool:
        """Hands spooled records over, oldest first: all of them while healthy, one as
        a probe every few seconds while not. True when it stopped with more to do
        (it hands over at most REPLAY_ROUND records per call, so the thread
        keeps taking in new records)."""
        if self.producer is None or self.closed:
            return False
        src = self.retry if self.retry.unread else self.backlog if self.backlog.unread else None
        if src is None:
            if self._held:
                self._spool([], [])
            return False
        if not self.healthy:
            if self._replays_inflight or time.monotonic() < self._probe_at:
                return False
            self._probe_at = time.monotonic() + self._backoff
        limit = self.settings.max_in_flight_bytes
        handed = 0
        while self.inflight_bytes < limit and src.unread:
            if handed >= REPLAY_ROUND:
                return True
            want = REPLAY_BATCH if self.healthy else 1
            items, cur = src.spool.read(want, start=src.ahead)
            self._check_corrupt(src)
            batch = Batch(cur, len(items))
            src.batches.append(batch)
            src.ahead = cur
            if len(items) < want:
                src.unread = False
            topics, keys, values = [], [], []
            for value in items:
                try:
                    topic, key = self.route(orjson.loads(value))
                except orjson.JSONDecodeError:  # checksummed, so never ours: skip it
                    batch.outstanding -= 1
                    continue
                topics.append(topic)
                keys.append(key)
                values.append(value)
            taken = self._hand_over(topics, keys, values, src, batch) if values else 0
            if taken < len(values):  # trouble: the rest is read again after the rewind
                batch.outstanding -= len(values) - taken
                batch.failed = src.failed = True
            handed += len(items)
            self._settle(src)
            if not self.healthy:
                break
        return False

    def _check_corrupt(self, src: Source) -> None:
        delta = src.spool.corrupt - self._corrupt_seen[src.name]
        if delta > 0:
            self._corrupt_seen[src.name] = src.spool.corrupt
            self.c.corrupt_skipped += delta
            self.losses.append((delta, "spool_corrupt", None, None))
            self.warn(f"connscope: kafka: skipped the damaged rest of a spool segment in {src.spool.path} "
                      "(its records are lost and counted in a lost record)")

    def housekeeping(self) -> None:
        if self._dirty and time.monotonic() - self._synced >= SYNC_EVERY_S:
            self.sync()
        self._replace_if_wedged()
        self._report()

    def _replace_if_wedged(self) -> None:
        """kafka-python 3.0.12 can wedge after all brokers were away for longer
        than the delivery timeout: once they are back, its batches are neither
        sent nor expired and their futures never resolve (seen in the 60 s
        outage test: 14,674 records in flight, nothing for minutes). kafka-python
        itself fails every record within its delivery timeout, so a producer
        that resolved nothing for longer than that (plus the request timeout
        and some slack) while records are in flight is wedged: it is closed,
        its records go back to the spools as failed, and a new one is made."""
        if self.producer is None or not self.flights:
            return
        silent = time.monotonic() - self._progress_at
        if silent < self._wedged_after:
            return
        producer, self.producer = self.producer, None
        self.c.producers_replaced += 1
        n = self.inflight_records
        self.warn(f"connscope: kafka: the producer resolved none of its {n} records in flight for {silent:.0f} s; "
                  "replacing it (those records are sent again from the spool)")
        # close() may wait on the wedged client: never on this thread
        threading.Thread(target=close_now, args=(producer,), name="connscope-kafka-close", daemon=True).start()
        stuck = kerr.KafkaTimeoutError(f"no acknowledgement within {self._wedged_after:.0f} s (producer replaced)")
        self.handle(failing=stuck)

    def sync(self) -> None:
        for src in (self.retry, self.backlog):
            src.spool.sync()
        self._dirty = False
        self._synced = time.monotonic()

    # --- stop ----------------------------------------------------------------------
    def shutdown(self, deadline: float, drain) -> None:
        """Hands the memory stage over and waits for the brokers until
        `deadline` (monotonic); what is still not acknowledged stays in (or
        goes to) the spool for the next start."""
        if self.producer is not None:
            if not self._unread():
                self._hand_memory(math.inf, deadline)
            try:
                self.producer.flush(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # KafkaTimeoutError: what is left goes to the spool
                pass
            drain()
            self.handle()
        self._spill()  # the backlog spool keeps its order: memory is newer than all of it
        self.closed = True
        # unsettled flights: every record not acknowledged (failed or pending) is sent again
        fresh = [v for f in self.flights if f.src is None
                 for fut, v in zip(f.futures, f.values) if fut is not None and not fut.succeeded()]
        if fresh:
            n = self.retry.spool.append_many(fresh, over=1 << 62)
            self.c.spooled += n
        if self._held:
            self.c.spooled += self.backlog.spool.append_many(self._held, over=1 << 62)
            self._held = []
        self.flights.clear()
        self.inflight_bytes = self.inflight_records = self._replays_inflight = 0
        self.sync()
        if self.producer is not None:
            close_now(self.producer)  # what it still holds is spooled already
        for src in (self.retry, self.backlog):
            src.spool.close()


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


_SEQ = b'"seq":'


def seq_of(value: bytes) -> int | None:
    """The `seq` of an encoded record (its numbers go into the `lost` record
    of a drop, so a consumer can tell which gaps the drop explains)."""
    i = value.find(_SEQ)
    if i < 0:
        return None
    i += len(_SEQ)
    j = i
    while j < len(value) and 48 <= value[j] <= 57:
        j += 1
    return int(value[i:j]) if j > i else None
