"""The mock Kafka cluster fixture, exercised over the real wire protocol with kafka-python."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

pytest.importorskip("confluent_kafka", reason=(
    "confluent_kafka is not importable: its bundled librdkafka runs the mock Kafka "
    "cluster (a test dependency: pip install -e '.[test]')"), exc_type=ImportError)

from kafka import KafkaProducer  # noqa: E402
from kafka.errors import KafkaError, KafkaTimeoutError, NotLeaderForPartitionError  # noqa: E402

from .conftest import API_VERSION, consume_all  # noqa: E402
from .mockcluster import PRODUCE  # noqa: E402

NOT_LEADER_OR_FOLLOWER = 6  # kafka-python calls it NotLeaderForPartitionError


def producer(bootstrap: str, **overrides) -> KafkaProducer:
    conf = dict(
        bootstrap_servers=bootstrap,
        api_version=API_VERSION,
        acks="all",
        linger_ms=5,
        retry_backoff_ms=50,
        reconnect_backoff_ms=50,
        reconnect_backoff_max_ms=500,
    )
    conf.update(overrides)
    return KafkaProducer(**conf)


def send_all(p: KafkaProducer, topic: str, items, timeout: float = 20.0):
    """Send (key, value) pairs; return the RecordMetadata of each, in send order."""
    futures = [p.send(topic, key=k, value=v) for k, v in items]
    p.flush(timeout=timeout)
    return [f.get(timeout=timeout) for f in futures]


def test_keyed_messages_round_trip_in_order(mock_cluster):
    topic, partitions = "rt", 4
    mock_cluster.create_topic(topic, partitions)
    items = [(b"key-%02d" % (i % 25), b"%s/%04d" % (b"key-%02d" % (i % 25), i)) for i in range(1000)]

    p = producer(mock_cluster.bootstrap)
    try:
        metas = send_all(p, topic, items)
    finally:
        p.close(timeout=5)

    got = consume_all(mock_cluster.bootstrap, topic, partitions, timeout=30)
    assert sorted(m.value for m in got) == sorted(v for _, v in items)
    assert len(got) == 1000
    # What the broker acknowledged is what is stored, at that partition and offset.
    stored = {(m.partition, m.offset): (m.key, m.value) for m in got}
    assert {(md.partition, md.offset): kv for md, kv in zip(metas, items)} == stored
    # Every partition got data and starts at offset 0 with no gaps.
    per_partition = defaultdict(list)
    for m in got:
        per_partition[m.partition].append(m.offset)
    assert sorted(per_partition) == list(range(partitions))
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))
    # One key -> one partition, and its messages in send order there.
    by_key = defaultdict(list)
    for m in got:
        by_key[m.key].append(m)
    assert len(by_key) == 25
    for key, msgs in by_key.items():
        assert len({m.partition for m in msgs}) == 1, key
        assert [m.value for m in msgs] == [v for k, v in items if k == key]


def test_broker_down_fails_delivery_then_recovers(mock_cluster):
    topic = "down"
    mock_cluster.create_topic(topic, 1)
    p = producer(mock_cluster.bootstrap, request_timeout_ms=1000, delivery_timeout_ms=2000,
                 max_block_ms=5000)
    try:
        assert send_all(p, topic, [(None, b"before")])[0].offset == 0

        mock_cluster.broker_down(1)
        future = p.send(topic, value=b"while-down")
        with pytest.raises(KafkaError) as exc_info:
            future.get(timeout=15)
        assert type(exc_info.value) is KafkaTimeoutError

        mock_cluster.broker_up(1)
        after = send_all(p, topic, [(None, b"after-%d" % i) for i in range(10)])
        assert [md.partition for md in after] == [0] * 10
    finally:
        p.close(timeout=5)

    values = [m.value for m in consume_all(mock_cluster.bootstrap, topic, 1)]
    assert values[0] == b"before"
    assert values[-10:] == [b"after-%d" % i for i in range(10)]
    assert set(values) <= {b"before", b"while-down"} | {b"after-%d" % i for i in range(10)}


def test_injected_produce_error_reaches_a_producer_without_retries(mock_cluster):
    topic = "noretry"
    mock_cluster.create_topic(topic, 1)
    p = producer(mock_cluster.bootstrap, retries=0, enable_idempotence=False)
    try:
        send_all(p, topic, [(None, b"warm-up")])
        mock_cluster.push_request_errors(PRODUCE, [NOT_LEADER_OR_FOLLOWER])
        with pytest.raises(KafkaError) as exc_info:
            p.send(topic, value=b"rejected").get(timeout=10)
        assert type(exc_info.value) is NotLeaderForPartitionError
        assert send_all(p, topic, [(None, b"accepted")])[0].offset == 1
    finally:
        p.close(timeout=5)
    assert [m.value for m in consume_all(mock_cluster.bootstrap, topic, 1)] == [b"warm-up", b"accepted"]


def test_injected_produce_errors_are_retried_without_loss(mock_cluster):
    topic, partitions = "errs", 2
    mock_cluster.create_topic(topic, partitions)
    p = producer(mock_cluster.bootstrap)
    try:
        send_all(p, topic, [(None, b"warm-up")])
        mock_cluster.push_request_errors(PRODUCE, [NOT_LEADER_OR_FOLLOWER, NOT_LEADER_OR_FOLLOWER])
        values = [b"m-%03d" % i for i in range(200)]
        send_all(p, topic, [(b"k%d" % (i % 7), v) for i, v in enumerate(values)])
    finally:
        p.close(timeout=5)
    # Both injected errors were used up by those sends: a producer that does not
    # retry now gets through.
    strict = producer(mock_cluster.bootstrap, retries=0, enable_idempotence=False)
    try:
        send_all(strict, topic, [(None, b"after")])
    finally:
        strict.close(timeout=5)

    got = [m.value for m in consume_all(mock_cluster.bootstrap, topic, partitions)]
    # No loss; the mock may store a retried batch twice, so duplicates are allowed.
    assert set(got) == set(values) | {b"warm-up", b"after"}
    assert len(got) >= len(values) + 2


def test_rtt_delays_responses(mock_cluster):
    topic = "rtt"
    mock_cluster.create_topic(topic, 1)
    p = producer(mock_cluster.bootstrap, linger_ms=0)
    try:
        send_all(p, topic, [(None, b"fast")])
        mock_cluster.set_rtt(1, 400)
        t0 = time.monotonic()
        send_all(p, topic, [(None, b"slow")])
        assert time.monotonic() - t0 >= 0.35
        mock_cluster.set_rtt(1, 0)
    finally:
        p.close(timeout=5)
    assert [m.value for m in consume_all(mock_cluster.bootstrap, topic, 1)] == [b"fast", b"slow"]


def test_three_brokers_produce_consume(mock_cluster3):
    assert len(mock_cluster3.bootstrap.split(",")) == 3
    topic, partitions = "three", 6
    mock_cluster3.create_topic(topic, partitions, replication=3)
    items = [(b"k%d" % (i % 12), b"v%04d" % i) for i in range(300)]
    p = producer(mock_cluster3.bootstrap)
    try:
        metas = send_all(p, topic, items)
    finally:
        p.close(timeout=5)
    got = consume_all(mock_cluster3.bootstrap, topic, partitions)
    assert sorted(m.value for m in got) == sorted(v for _, v in items)
    assert {(md.partition, md.offset) for md in metas} == {(m.partition, m.offset) for m in got}
