"""Kafka test fixtures: librdkafka's mock cluster (tests/kafka_sink/mockcluster.py) and a reader.

``mock_cluster`` (1 broker) and ``mock_cluster3`` (3 brokers) are new per test and
closed even when the test fails. ``consume_all`` reads a topic back with
kafka-python, from the beginning of every partition to its end offset.

Against the mock, kafka-python must use ``api_version=(2, 3)`` (``API_VERSION``).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import pytest

from .tlsproxy import tansu, tls_broker  # noqa: F401  (second tier: Tansu, and Tansu behind mutual TLS)

# kafka-python speaks to the mock only when pinned to this protocol version.
API_VERSION = (2, 3)

_SKIP_REASON = ("confluent_kafka is not importable: its bundled librdkafka runs the mock "
                "Kafka cluster (a test dependency: pip install -e '.[test]')")


class Message(NamedTuple):
    value: bytes | None
    key: bytes | None
    partition: int
    offset: int


def _new_cluster(brokers: int):
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        pytest.skip(_SKIP_REASON)
    from .mockcluster import MockCluster
    return MockCluster(brokers)


@pytest.fixture
def mock_cluster():
    """A 1-broker mock Kafka cluster (broker id 1); ``.bootstrap`` for clients."""
    cluster = _new_cluster(1)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def mock_cluster3():
    """A 3-broker mock Kafka cluster (broker ids 1, 2, 3)."""
    cluster = _new_cluster(3)
    try:
        yield cluster
    finally:
        cluster.close()


def consume_all(bootstrap: str, topic: str, partitions: int, timeout: float = 20.0,
                *, expect_start_at_zero: bool = True) -> list[Message]:
    """Every message of ``topic`` (partitions 0..partitions-1), in offset order per partition.

    Manual assignment (no consumer group) and seek_to_beginning, then reads until
    each partition's position reaches the end offset taken at the start. Raises
    AssertionError on timeout. With ``expect_start_at_zero`` it also checks that
    every partition still begins at offset 0: the mock keeps at most ~5 MiB per
    partition and silently drops the oldest data beyond that.
    """
    from kafka import KafkaConsumer, TopicPartition

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        api_version=API_VERSION,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=10000,
    )
    try:
        consumer.assign(tps)
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        if expect_start_at_zero:
            moved = {tp.partition: off for tp, off in begin.items() if off != 0}
            assert not moved, (
                f"{topic}: beginning offsets {moved} are not 0: the mock cluster dropped old data "
                "(it keeps ~5 MiB per partition): use more partitions or smaller messages")
        consumer.seek_to_beginning(*tps)
        out: list[Message] = []
        pending = {tp for tp in tps if end[tp] > begin[tp]}
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            assert left > 0, (
                f"{topic}: timed out after {timeout}s; still reading "
                + ", ".join(f"p{tp.partition} at {consumer.position(tp)} of {end[tp]}"
                            for tp in sorted(pending, key=lambda t: t.partition)))
            batch = consumer.poll(timeout_ms=int(min(left, 1.0) * 1000))
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp]:
                        out.append(Message(r.value, r.key, r.partition, r.offset))
            for tp in list(pending):
                if consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        out.sort(key=lambda m: (m.partition, m.offset))
        return out
    finally:
        consumer.close()
