"""Each way Kafka can be unusable gets one line naming the cause and the setting
to change, from probe() (check, start-up) and from the running sink; only a
setting that can never work stops the agent."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import errors as kerr

from agent.errors import UsageError
from agent.sinks.kafka import KafkaSettings, KafkaSink, probe
from agent.sinks.kafka.explain import explain

from .sinkkit import Feeder, settings_for, wait_for

REPO = Path(__file__).resolve().parents[2]
UNKNOWN_TOPIC_OR_PARTITION = 3
TOPIC_AUTHORIZATION_FAILED = 29


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spooling_with(sink, n=100):
    """Writes n records; the sink must take them all (into the spool) and say why."""
    feeder = Feeder(sink, pids=4)
    feeder.write(n)
    return wait_for(lambda: (s := sink.stats())["last_error"] and s["spooled"] >= n and s, 15, "a last_error")


@pytest.mark.parametrize("bad", ["kafka1", "kafka1:0", "kafka1:99999", "host:port", "-x:9092", "[::1:9092", ""])
def test_unparsable_bootstrap_stops_the_agent_with_a_usage_error(bad, tmp_path):
    settings = KafkaSettings(bootstrap=[bad])
    with pytest.raises(UsageError) as err:
        KafkaSink(settings, str(tmp_path))
    assert err.value.exit_code == 2
    assert err.value.one_line().startswith(f"connscope: kafka.bootstrap = {bad!r} is not valid (fix: use ")
    with pytest.raises(UsageError):
        probe(settings)


def test_empty_bootstrap_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as err:
        KafkaSink(KafkaSettings(), str(tmp_path))
    assert "kafka.bootstrap = [] is not valid" in err.value.one_line()


def test_unreachable_broker_is_reported_and_records_spool(tmp_path, capfd):
    port = free_port()
    settings = KafkaSettings(bootstrap=[f"127.0.0.1:{port}"], api_version="2.3", flush_timeout_s=0.5)
    assert probe(settings, 3) == (False, f"kafka: no broker reachable (127.0.0.1:{port}: Connection refused) "
                                         "(fix: start the brokers, or correct kafka.bootstrap)")
    sink = KafkaSink(settings, str(tmp_path))
    try:
        stats = _spooling_with(sink)
    finally:
        sink.close()
    expected = (f"kafka: no broker reachable: 127.0.0.1:{port} refused the connection "
                "(fix: start the broker or correct kafka.bootstrap)")
    assert stats["last_error"] == expected and stats["state"] == "spooling" and stats["dropped"] == 0
    err = [line for line in capfd.readouterr().err.splitlines() if line]
    assert err == [f"connscope: {expected}; records wait in the spool {tmp_path}"]


_NO_NETWORK_CHILD = """
import json, sys, tempfile
sys.path[:0] = [{repo!r}, {tests!r}]
from agent.sinks.kafka import KafkaSettings, KafkaSink, probe
from kafka_sink.test_sink_errors import _spooling_with
settings = KafkaSettings(bootstrap=["kafka-nowhere.invalid:9092"], api_version="2.3", flush_timeout_s=0.5)
ok, line = probe(settings, 3)
sink = KafkaSink(settings, tempfile.mkdtemp(), warn=lambda line: None)
stats = _spooling_with(sink)
sink.close()
print(json.dumps([ok, line, stats["last_error"]]))
"""


def test_unresolvable_broker_host_is_reported(tmp_path):
    """In a network namespace of our own (no network at all), so that no name
    lookup leaves the machine."""
    code = _NO_NETWORK_CHILD.format(repo=str(REPO), tests=str(REPO / "tests"))
    cp = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=60, cwd=REPO)
    assert cp.returncode == 0, cp.stderr
    ok, line, last_error = json.loads(cp.stdout.splitlines()[-1])
    assert ok is False
    assert line.startswith("kafka: cannot resolve the broker host (kafka-nowhere.invalid: ")
    assert line.endswith(" (fix: correct kafka.bootstrap, or the host's DNS)")
    assert last_error == ("kafka: cannot resolve the broker host in kafka.bootstrap (kafka-nowhere.invalid:9092) "
                          "(fix: correct kafka.bootstrap, or the host's DNS)")


def test_reachable_cluster_probe_names_brokers_and_partitions(mock_cluster3):
    mock_cluster3.create_topic("connscope", 6, replication=3)
    ok, line = probe(settings_for(mock_cluster3), 5)
    assert (ok, line) == (True, f"kafka: 3 brokers reachable at {mock_cluster3.bootstrap}; "
                                "topics: connscope (6 partitions)")


@pytest.mark.parametrize("topic,error,expected", [
    ("missing", UNKNOWN_TOPIC_OR_PARTITION,
     "kafka: topic missing does not exist on {bootstrap} "
     "(fix: create it, set kafka.topic, or set kafka.auto_create_topics = true)"),
    ("secret", TOPIC_AUTHORIZATION_FAILED,
     "kafka: not authorized to write topic secret "
     "(fix: grant WRITE on it to kafka.sasl_username, or set kafka.topic)"),
])
def test_topic_errors_are_reported_by_probe_and_sink(mock_cluster, tmp_path, topic, error, expected):
    """An unknown topic and an unauthorized one: the same line from probe() and the running sink."""
    mock_cluster.topic_set_error(topic, error)
    settings = settings_for(mock_cluster, topic=topic, flush_timeout_s=0.5)
    expected = expected.format(bootstrap=mock_cluster.bootstrap)
    assert probe(settings, 5) == (False, expected)
    sink = KafkaSink(settings, str(tmp_path), warn=lambda line: None)
    try:
        assert _spooling_with(sink)["last_error"] == expected
    finally:
        sink.close()


@pytest.mark.parametrize("api_version", ["2.3", None])
def test_tls_to_a_plaintext_broker_is_reported(mock_cluster, tmp_path, api_version):
    """The mock has no TLS listener: a TLS client gets its connection reset
    during the handshake (the tests with a real TLS terminator are in test_tls*)."""
    port = mock_cluster.bootstrap.split(":")[1]
    settings = settings_for(mock_cluster, security_protocol="SSL", api_version=api_version, flush_timeout_s=0.5)
    assert probe(settings, 5) == (False, f"kafka: TLS handshake failed (127.0.0.1:{port}: Connection reset by peer) "
                                         "(fix: check kafka.ssl_cafile, kafka.ssl_certfile, kafka.ssl_keyfile, "
                                         "kafka.ssl_check_hostname and kafka.security_protocol)")
    sink = KafkaSink(settings, str(tmp_path), warn=lambda line: None)
    try:
        stats = _spooling_with(sink)
    finally:
        sink.close()
    assert stats["last_error"].startswith(f"kafka: TLS handshake with 127.0.0.1:{port} failed (")
    assert stats["last_error"].endswith("(fix: check kafka.security_protocol, kafka.ssl_cafile, "
                                        "kafka.ssl_certfile and kafka.ssl_keyfile)")
    assert stats["state"] == ("spooling" if api_version else "connecting")


def test_another_producers_trouble_does_not_become_the_sinks_cause(mock_cluster, tmp_path):
    """kafka-python logs process-wide. A producer the sink gave up on (or any
    other client in the process) that keeps failing must not be named as the
    cause of the sink's own, different trouble."""
    from kafka import KafkaProducer

    from .conftest import API_VERSION

    stray = KafkaProducer(bootstrap_servers=f"127.0.0.1:{free_port()}", api_version=API_VERSION,
                          reconnect_backoff_ms=50, reconnect_backoff_max_ms=100, max_block_ms=100)
    try:
        with pytest.raises(kerr.KafkaTimeoutError):  # keeps it connecting, and logging refusals
            stray.send("t", b"x")
        port = mock_cluster.bootstrap.split(":")[1]
        sink = KafkaSink(settings_for(mock_cluster, security_protocol="SSL", flush_timeout_s=0.5), str(tmp_path),
                         warn=lambda line: None)
        try:
            stats = _spooling_with(sink)
        finally:
            sink.close()
    finally:
        stray.close(timeout=0)
    assert stats["last_error"].startswith(f"kafka: TLS handshake with 127.0.0.1:{port} failed ("), stats


def test_sasl_failures_name_the_sasl_settings():
    """kafka-python's own exceptions for SASL failures (the broker side is tested
    against a real broker with SASL, where one runs)."""
    where = ["b1:9093"]
    assert explain(kerr.SaslAuthenticationFailedError("bad password"), [], where) == (
        "kafka: SASL authentication failed at b1:9093 "
        "(fix: check kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password)")
    assert explain(kerr.UnsupportedSaslMechanismError(), [], where) == (
        "kafka: the brokers at b1:9093 do not accept this SASL mechanism "
        "(fix: set kafka.sasl_mechanism to one they enable, or check kafka.security_protocol)")
    log = ["<KafkaConnection node_id=bootstrap-0>: Authentication failed for user alice",
           "Bootstrap bootstrap-0 not ready; waiting 0.5 secs"]
    assert explain(kerr.KafkaTimeoutError("Unable to bootstrap"), log, where).startswith(
        "kafka: SASL authentication failed at b1:9093")


def test_closing_with_the_broker_down_is_bounded(tmp_path):
    settings = KafkaSettings(bootstrap=[f"127.0.0.1:{free_port()}"], api_version="2.3", flush_timeout_s=1.0)
    sink = KafkaSink(settings, str(tmp_path), warn=lambda line: None)
    _spooling_with(sink, 50)
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < 1.0 + 2.5  # flush_timeout_s plus at most one metadata wait
    assert sink.stats()["state"] == "closed"


def test_closing_with_records_in_flight_stops_kafka_pythons_thread(mock_cluster, tmp_path):
    """kafka-python's close(timeout=0) raises when records are pending and
    leaves its network thread running; the sink's close must really stop it
    (and keep the records in the spool)."""
    mock_cluster.create_topic("connscope", 4)
    sink = KafkaSink(settings_for(mock_cluster, flush_timeout_s=0.5), str(tmp_path), warn=lambda line: None)
    feeder = Feeder(sink, pids=4)
    try:
        feeder.write(100)
        wait_for(lambda: sink.stats()["acked"] >= 100, 20, "delivery")
        sender = sink.delivery.producer._sender
        mock_cluster.broker_down(1)
        feeder.write(200)
        wait_for(lambda: sink.stats()["in_flight_records"] > 0, 10, "records in flight")
    finally:
        sink.close()
    stats = sink.stats()
    sender.join(10)
    assert not sender.is_alive(), "kafka-python's network thread outlived the sink"
    assert stats["state"] == "closed" and stats["spool_bytes"] > 0 and stats["dropped"] == 0, stats
