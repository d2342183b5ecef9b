"""Broker outages and refused writes while records flow: nothing is lost.

All brokers go down for 10 s and for 60 s while the feeder writes >= 5,000
records/s; after they come back, the spool drains and every record is
consumed. The 10 s outage is shorter than the delivery timeout (records in
flight wait inside kafka-python, the rest spools once the in-flight bound is
reached); the 60 s one outlasts a 5 s delivery timeout, so records in flight
fail, go to the retry spool and are sent again first.
"""

from __future__ import annotations

import time

import pytest

from kafka import KafkaProducer

from agent.sinks.kafka import KafkaSink

from .conftest import API_VERSION
from .mockcluster import PRODUCE
from .sinkkit import Feeder, check_delivered, settings_for, wait_for

PARTITIONS = 64  # the mock keeps ~5 MiB per partition: 60 s at 5,000/s needs room
RATE = 5500  # records/s written (the requirement is >= 5,000)

# Kafka error codes the brokers answer Produce with, and librdkafka's
# transport error, which makes the mock broker drop the connection instead.
NOT_LEADER_FOR_PARTITION = 6
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19
DISCONNECT = -195


def _drained(sink, total: int):
    s = sink.stats()
    return s["spool_bytes"] == 0 and s["in_flight_records"] == 0 and s["acked"] >= total and s


@pytest.mark.timeout(300)
@pytest.mark.parametrize("down_s,delivery_timeout_ms", [(10, 120_000), (60, 5_000)], ids=["10s", "60s"])
def test_all_brokers_down_while_records_flow(mock_cluster3, tmp_path, down_s, delivery_timeout_ms):
    cluster = mock_cluster3
    cluster.create_topic("connscope", PARTITIONS, replication=3)
    sink = KafkaSink(settings_for(cluster, delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=3000),
                     str(tmp_path))
    feeder = Feeder(sink)
    try:
        feeder.start(RATE)
        wait_for(lambda: sink.stats()["acked"] >= 5000, 20, "delivery before the outage")
        for b in (1, 2, 3):
            cluster.broker_down(b)
        t_down = time.monotonic()
        time.sleep(down_s)
        during = sink.stats()
        for b in (1, 2, 3):
            cluster.broker_up(b)
        outage = time.monotonic() - t_down
        time.sleep(3)
        feeder.stop()
        stats = wait_for(lambda: _drained(sink, len(feeder.sent)), 120, "the spool to drain")
    finally:
        feeder.stop()
        sink.close()
    assert feeder.rate >= 5000, f"the feeder wrote only {feeder.rate:.0f} records/s"
    assert during["spool_bytes"] > 0 and during["state"] in ("delivering", "spooling"), during
    assert outage >= down_s
    assert stats["dropped"] == 0 and stats["corrupt_skipped"] == 0 and not feeder.lost_reports, \
        (stats, feeder.lost_reports[:3])
    assert stats["replayed"] > 0 and stats["spooled"] >= stats["replayed"], stats
    if delivery_timeout_ms < down_s * 1000:
        assert stats["failed"] > 0, stats  # in-flight records expired, went to the retry spool, were resent
    check_delivered(cluster, "connscope", PARTITIONS, feeder.sent, validate_every=500, timeout=120)


def test_refused_produce_requests_are_retried_without_loss(mock_cluster, tmp_path):
    mock_cluster.create_topic("connscope", 8)
    sink = KafkaSink(settings_for(mock_cluster), str(tmp_path))
    feeder = Feeder(sink, pids=64)
    try:
        feeder.write(500)
        wait_for(lambda: sink.stats()["acked"] >= 500, 20, "warm-up delivery")
        errors = [NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, DISCONNECT] * 3
        mock_cluster.push_request_errors(PRODUCE, errors)
        for _ in range(40):
            feeder.write(100)
            time.sleep(0.01)
        stats = wait_for(lambda: _drained(sink, len(feeder.sent)), 60, "every record acknowledged")
    finally:
        sink.close()
    assert stats["dropped"] == 0 and stats["rejected"] == 0
    assert len(feeder.sent) == 4500
    check_delivered(mock_cluster, "connscope", 8, feeder.sent)
    # The sink's requests used up every pushed error: a producer that never
    # retries now gets through at once.
    strict = KafkaProducer(bootstrap_servers=mock_cluster.bootstrap, api_version=API_VERSION, retries=0,
                           enable_idempotence=False)
    try:
        assert strict.send("after", b"x").get(timeout=10).offset == 0
    finally:
        strict.close(timeout=5)
