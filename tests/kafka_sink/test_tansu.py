"""The Tansu broker fixture (tests/kafka_sink/tansu.py), proven with kafka-python alone.

No ``api_version`` pin: kafka-python negotiates with Tansu as with Apache Kafka.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections import defaultdict

import pytest

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError

from .tansu import TansuBroker, api_versions_ok, consume_to_end, unique_topic

CODECS = [None, "gzip", "lz4", "zstd", "snappy"]


def _send(bootstrap: str, topic: str, items, **conf):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **conf)
    try:
        futures = [p.send(topic, key=k, value=v) for k, v in items]
        p.flush(timeout=20)
        return [f.get(timeout=20) for f in futures]
    finally:
        p.close(timeout=5)


def test_create_topics_and_metadata(tansu):
    topic = unique_topic("meta")
    tansu.create_topic(topic, 3)
    with pytest.raises(TopicAlreadyExistsError):
        tansu.create_topic(topic, 3)
    c = KafkaConsumer(bootstrap_servers=tansu.bootstrap, group_id=None)
    try:
        assert c.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        c.close()


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "none")
def test_keyed_round_trip_per_codec(tansu, codec):
    topic, partitions = unique_topic(f"rt-{codec or 'none'}"), 3
    tansu.create_topic(topic, partitions)
    # Compressible, JSON-like values of a few hundred bytes, like the agent's records.
    items = [(b"host-%d" % (i % 7), b'{"seq":%d,"key":"host-%d","pad":"%s"}' % (i, i % 7, b"x" * (i % 300)))
             for i in range(700)]
    metas = _send(tansu.bootstrap, topic, items, compression_type=codec)

    got = consume_to_end(tansu.bootstrap, topic, partitions, expect=len(items))
    assert len(got) == len(items)
    # What the broker acknowledged is exactly what is stored, at that partition and offset.
    assert {(m.partition, m.offset): (m.key, m.value) for m in got} == {
        (md.partition, md.offset): kv for md, kv in zip(metas, items)}
    by_key = defaultdict(list)
    for m in got:
        by_key[m.key].append(m)
    assert len(by_key) == 7
    for key, msgs in by_key.items():
        assert len({m.partition for m in msgs}) == 1, key
        assert [m.value for m in msgs] == [v for k, v in items if k == key]
    for p in range(partitions):
        offsets = [m.offset for m in got if m.partition == p]
        assert offsets == list(range(len(offsets)))


def test_end_offsets_lag_behind_a_batch(tansu):
    """Why consume_to_end reads until idle: ListOffsets(latest) is the last batch's base + 1."""
    topic = unique_topic("eo")
    tansu.create_topic(topic, 1)
    p = KafkaProducer(bootstrap_servers=tansu.bootstrap, linger_ms=1000)
    try:
        futures = [p.send(topic, b"v%d" % i, partition=0) for i in range(10)]
        p.flush(timeout=20)
        assert [f.get(timeout=5).offset for f in futures] == list(range(10))
    finally:
        p.close(timeout=5)
    c = KafkaConsumer(bootstrap_servers=tansu.bootstrap, group_id=None)
    try:
        assert c.end_offsets([TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 1}
    finally:
        c.close()
    assert [m.value for m in consume_to_end(tansu.bootstrap, topic, 1, expect=10)] == [
        b"v%d" % i for i in range(10)]


def test_broker_stops_and_frees_its_port():
    workdir = tempfile.mkdtemp(prefix="connscope-tansu-")
    broker = None
    try:
        broker = TansuBroker(workdir)
        port, pid = broker.port, broker.proc.pid
        assert api_versions_ok("127.0.0.1", port)
        broker.stop()
        assert broker.proc is None and not os.path.exists(f"/proc/{pid}")  # exited and reaped
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
