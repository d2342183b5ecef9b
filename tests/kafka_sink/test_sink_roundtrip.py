"""Every record the Kafka sink is given is consumed back intact, in order per key:
1 and 3 brokers, each codec, against librdkafka's mock cluster."""

from __future__ import annotations

import orjson
import pytest

from agent.sinks.kafka import KafkaSink

from .sinkkit import HOST, Feeder, check_delivered, settings_for, wait_for

CODECS = ["none", "gzip", "lz4", "zstd", "snappy"]
PARTITIONS = 6


@pytest.mark.parametrize("brokers", [1, 3])
@pytest.mark.parametrize("codec", CODECS)
def test_every_record_round_trips_in_order_per_key(request, brokers, codec, tmp_path):
    cluster = request.getfixturevalue("mock_cluster" if brokers == 1 else "mock_cluster3")
    cluster.create_topic("connscope", PARTITIONS, replication=brokers)
    sink = KafkaSink(settings_for(cluster, compression=codec), str(tmp_path))
    feeder = Feeder(sink, pids=40)
    try:
        for _ in range(20):
            feeder.write(100)
        wait_for(lambda: sink.stats()["acked"] >= 2000, 30, "2000 acknowledgements")
        assert sink.delivery.producer.config["compression_type"] == (None if codec == "none" else codec)
    finally:
        sink.close()
    stats = sink.stats()
    assert stats["acked"] == 2000 and stats["dropped"] == 0 and stats["failed"] == 0
    assert stats["spool_bytes"] == 0 and stats["state"] == "closed"
    got = check_delivered(cluster, "connscope", PARTITIONS, feeder.sent)
    assert len(got) == 2000
    # the key is host/pid: 40 processes, each in one partition
    assert {f"{HOST}/{r['pid']}" for r in got.values()} == {f"{HOST}/{10000 + i}" for i in range(40)}


def test_one_topic_per_record_type_keyed_by_host(mock_cluster, tmp_path):
    """topic "cs.{type}" splits by type; key "host" keeps the host in one partition."""
    for t in ("connect", "close", "lost"):
        mock_cluster.create_topic(f"cs.{t}", 3)
    sink = KafkaSink(settings_for(mock_cluster, topic="cs.{type}", key="host"), str(tmp_path))
    feeder = Feeder(sink, pids=10)
    try:
        feeder.write(300)
        wait_for(lambda: sink.stats()["acked"] >= 300, 30, "300 acknowledgements")
    finally:
        sink.close()
    for t in ("connect", "close"):
        sent = {s: v for s, v in feeder.sent.items() if orjson.loads(v)["type"] == t}
        got = check_delivered(mock_cluster, f"cs.{t}", 3, sent)
        assert len(got) == 150


def test_a_burst_with_the_broker_up_stays_out_of_the_spool(mock_cluster, tmp_path):
    """40,000 records written as fast as the writer goes (far past the in-flight
    bound) wait in memory, not on disk, and all arrive in order."""
    mock_cluster.create_topic("connscope", PARTITIONS)
    sink = KafkaSink(settings_for(mock_cluster, max_in_flight_bytes=1 << 20), str(tmp_path))
    feeder = Feeder(sink, pids=40)
    try:
        wait_for(lambda: sink.stats()["state"] == "delivering", 30, "the sink to connect")
        for _ in range(80):
            feeder.write(500)
        wait_for(lambda: sink.stats()["acked"] >= 40_000, 60, "40,000 acknowledgements")
        stats = sink.stats()
    finally:
        sink.close()
    # the writer outran the in-flight bound: records waited in memory (a
    # sample after each write could miss it on a machine whose producer
    # keeps up between writes: the peak cannot)
    assert stats["memory_peak_bytes"] > 0, stats
    assert (stats["acked"], stats["spooled"], stats["replayed"], stats["dropped"]) == (40_000, 0, 0, 0), stats
    assert stats["spool_bytes"] == 0
    got = check_delivered(mock_cluster, "connscope", PARTITIONS, feeder.sent, validate_every=97)
    assert len(got) == 40_000
