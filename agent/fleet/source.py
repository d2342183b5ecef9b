"""The connscope topics, read with kafka-python's KafkaConsumer.

In a consumer group (the default) several `connscope fleet` instances share
the partitions; each sees every record of the hosts whose partitions it
holds, since agents key records by host (kafka.key = "host"), which is what
its gap checks need. Without a group (`--group ""`) one instance reads
every partition.

Where to start: the group's committed offsets (new groups: the end), the
beginning (`--from-beginning`), or the first record at or after a time
(`--since`, by the records' Kafka timestamps). `--until` stops each
partition at its first record after that time; `--exit-at-end` stops once
every partition reached the end offset it had at assignment and a poll
came back empty.
"""

from __future__ import annotations

import time

from ..errors import UsageError

# how long the start waits for a first broker to answer before it gives up with one line
BOOTSTRAP_TIMEOUT_MS = 10_000


class FleetSource:
    def __init__(self, conf: dict, topics: list[str], group: str | None, from_beginning: bool = False,
                 since_ms: int | None = None, until_ms: int | None = None, exit_at_end: bool = False):
        from kafka import KafkaConsumer
        from kafka.errors import KafkaConnectionError, KafkaError

        from ..sinks.kafka.explain import KafkaLog

        # kafka-python's warnings go to a buffer, not stderr; trouble_line() explains them
        self.log = KafkaLog.install()
        self.brokers = list(conf.get("bootstrap_servers", []))
        t0 = time.time()
        self.topics = topics
        self.since_ms, self.until_ms = since_ms, until_ms
        self.from_beginning = from_beginning
        self.group = group or None
        self.exit_at_end = exit_at_end or until_ms is not None
        self.ends: dict = {}  # partition -> end offset at assignment
        self.stopped: set = set()  # partitions past --until
        self._assigned = False
        self._started: set = set()
        self._pending: list = []  # partitions the group assigned, to be set up after the poll
        self._since_reached: set = set()  # partitions whose first record at or after --since came
        self._empty = False
        try:
            self.consumer = KafkaConsumer(
                group_id=group or None, enable_auto_commit=bool(group),
                auto_offset_reset="earliest" if from_beginning or since_ms is not None else "latest",
                fetch_max_wait_ms=200, max_poll_records=5000, consumer_timeout_ms=1000,
                request_timeout_ms=15000, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, **conf)
        except (KafkaConnectionError, KafkaError) as err:
            cause, _, fix = self._explain(err, t0).partition(" (fix: ")
            raise UsageError(f"fleet: no Kafka broker answers at {', '.join(self.brokers)}: "
                             f"{cause.removeprefix('kafka: ')}",
                             fix[:-1] if fix.endswith(")") else "check --bootstrap (or kafka.bootstrap)") from None
        self._trouble_seen = time.time()
        if group:
            self.consumer.subscribe(topics, listener=_listener(self))
        else:
            self._assign_all()

    def _assign_all(self) -> None:
        from kafka import TopicPartition

        tps = []
        deadline = time.monotonic() + 30
        for topic in self.topics:
            parts = None
            while not parts:
                parts = self.consumer.partitions_for_topic(topic)
                if parts:
                    break
                if time.monotonic() > deadline:
                    raise UsageError(f"fleet: topic {topic!r} has no partitions (or does not exist)",
                                     "check --topic; agents create it at their first record when the "
                                     "broker allows auto-creation")
                time.sleep(0.2)
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.assigned(tps)

    def assigned(self, tps) -> None:
        """Seeks newly assigned partitions to where this run starts, and notes their end."""
        tps = [tp for tp in tps if tp not in self._started]  # a rebalance keeps the others' positions
        if not tps:
            return
        self._started.update(tps)
        if self.since_ms is not None:
            found = self.consumer.offsets_for_times({tp: self.since_ms for tp in tps})
            ends = self.consumer.end_offsets(tps)
            for tp in tps:
                at = found.get(tp)
                self.consumer.seek(tp, at.offset if at is not None else ends[tp])
        elif self.from_beginning and not self.group:  # a group's were sought at assignment
            self.consumer.seek_to_beginning(*tps)
        if self.exit_at_end:
            self.ends.update(self.consumer.end_offsets(tps))
        self._assigned = True

    def poll(self, timeout_ms: int = 200) -> list:
        """The next records: kafka-python ConsumerRecords (value, timestamp, partition...)."""
        batch = self.consumer.poll(timeout_ms=timeout_ms)
        if self._pending:  # assigned by the group during that poll
            pending, self._pending = self._pending, []
            if self.since_ms is not None:  # fetched from the committed offset: read again from --since
                batch = {tp: records for tp, records in batch.items() if tp not in pending}
            self.assigned(pending)
        out = []
        until, since = self.until_ms, self.since_ms
        for tp, records in batch.items():
            if since is not None and tp not in self._since_reached:
                # a broker may answer the time look-up with the start of the batch
                # that holds it (Tansu does): the records before it are left out
                first = next((i for i, r in enumerate(records) if r.timestamp >= since), None)
                if first is None:
                    continue
                records = records[first:]
                self._since_reached.add(tp)
            if until is None:
                out += records
                continue
            for i, r in enumerate(records):
                if r.timestamp > until:
                    out += records[:i]
                    self.stopped.add(tp)
                    self.consumer.pause(tp)
                    break
            else:
                out += records
        self._empty = not out
        return out

    def at_end(self) -> bool:
        """With --exit-at-end or --until: every partition is done."""
        if not self.exit_at_end or not self._assigned or not self._empty:
            return False
        for tp, end in self.ends.items():
            if tp in self.stopped:
                continue
            if self.consumer.position(tp) < end:
                return False
        return True

    def _explain(self, err, since: float) -> str:
        from ..sinks.kafka.explain import explain
        return explain(err, self.log.since(since), self.brokers)

    def trouble_line(self) -> str | None:
        """What kafka-python complained about since the last call, as one line
        naming the fix (None when it did not): the consumer only retries and logs."""
        now = time.time()
        lines = self.log.since(self._trouble_seen)
        self._trouble_seen = now
        if not lines:
            return None
        from ..sinks.kafka.explain import explain
        return explain(None, lines, self.brokers)

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:
            pass


def _listener(source: FleetSource):
    """A kafka-python ConsumerRebalanceListener that seeks and notes ends on assignment."""
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked) -> None:
            for tp in revoked:
                source.ends.pop(tp, None)

        def on_partitions_assigned(self, assigned) -> None:
            # kafka-python runs this inside its network loop: no blocking
            # calls (end_offsets, offsets_for_times) here, poll() does them
            fresh = [tp for tp in assigned if tp not in source._started]
            if fresh and source.from_beginning:
                source.consumer.seek_to_beginning(*fresh)
            source._pending += fresh

    return Listener()
