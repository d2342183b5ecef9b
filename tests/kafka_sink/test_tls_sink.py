"""The Kafka sink's TLS settings, for real: through the mutual-TLS terminator in front of Tansu.

A good configuration delivers; each wrong one fails with one line naming the
setting to change, from both probe() (check, start-up) and the running sink
(its warning), and loses nothing: the records wait in the spool.
"""

from __future__ import annotations

import time

from agent.sinks.kafka import KafkaSettings, KafkaSink, probe

from .tansu import consume_to_end, unique_topic
from .test_tansu_sink import agent_records, check_consumed, run_sink


def tls_settings(tb, topic: str, **overrides) -> KafkaSettings:
    conf = dict(bootstrap=[tb.bootstrap], topic=topic, security_protocol="SSL", ssl_cafile=tb.certs.ca,
                ssl_certfile=tb.certs.client_cert, ssl_keyfile=tb.certs.client_key, ssl_check_hostname=True,
                compression="lz4", linger_ms=5,
                # The sink gives up a bootstrap after min(request timeout, 5 s). A wrong
                # certificate fails at once; a shorter wait made a loaded machine's slow
                # handshake a timeout instead of the TLS error the tests expect.
                request_timeout_ms=5000)
    conf.update(overrides)
    return KafkaSettings(**conf)


def first_warning(settings: KafkaSettings, spool_dir: str, records: list[dict], timeout: float = 30.0):
    """Runs the sink until it warns; returns (warning, stats after close)."""
    warnings: list[str] = []
    sink = KafkaSink(settings, spool_dir, warn=warnings.append)
    try:
        for rec in records:
            sink.write(rec)
        sink.flush()
        deadline = time.monotonic() + timeout
        while not warnings and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sink.close()
    assert warnings, f"no warning within {timeout}s: {sink.stats()}"
    return warnings[0], sink.stats()


def assert_one_line(text: str, *names: str) -> None:
    assert "\n" not in text and text.count("(fix: ") == 1, text
    for name in names:
        assert name in text, f"{name} not named in: {text}"


def test_mutual_tls_delivers_every_record(tls_broker, tmp_path):
    topic = unique_topic("tls-sink")
    tls_broker.create_topic(topic, 2)
    settings = tls_settings(tls_broker, topic, request_timeout_ms=10000)
    ok, line = probe(settings, timeout=5)
    assert ok, line
    records = agent_records(200)
    stats, warnings = run_sink(settings, str(tmp_path), records)
    assert warnings == [] and stats["acked"] == len(records) and stats["spool_bytes"] == 0, stats
    got = consume_to_end(tls_broker.bootstrap, topic, 2, expect=len(records), **tls_broker.client_conf())
    check_consumed(got, records, key_of=lambda r: r["host"].encode())


def test_wrong_ca_names_ssl_cafile_and_loses_nothing(tls_broker, tmp_path):
    topic = unique_topic("tls-ca")
    tls_broker.create_topic(topic, 1)
    bad = tls_settings(tls_broker, topic, ssl_cafile=tls_broker.certs.other_ca)
    ok, line = probe(bad, timeout=10)
    assert not ok
    assert_one_line(line, "TLS", "CERTIFICATE_VERIFY_FAILED", "kafka.ssl_cafile")

    records = agent_records(50)
    spool = str(tmp_path / "spool")
    warning, stats = first_warning(bad, spool, records)
    assert_one_line(warning, "TLS", "certificate verify failed", "kafka.ssl_cafile")
    assert stats["acked"] == 0 and stats["dropped"] == 0 and stats["spool_bytes"] > 0, stats

    # With the right CA, a new sink on the same spool delivers what the bad one kept.
    stats, warnings = run_sink(tls_settings(tls_broker, topic, request_timeout_ms=10000), spool, [],
                               expect_acked=len(records))
    assert warnings == [] and stats["replayed"] == len(records) and stats["spool_bytes"] == 0, stats
    got = consume_to_end(tls_broker.bootstrap, topic, 1, expect=len(records), **tls_broker.client_conf())
    check_consumed(got, records, key_of=lambda r: r["host"].encode())


def test_hostname_mismatch_fails_with_the_check_on_and_delivers_with_it_off(tls_broker, tmp_path):
    topic = unique_topic("tls-name")
    tls_broker.create_topic(topic, 1)
    wrong = tls_broker.extra_proxy(tls_broker.certs.wrongname_cert, tls_broker.certs.wrongname_key)
    checked = tls_settings(tls_broker, topic, bootstrap=[wrong.bootstrap])
    ok, line = probe(checked, timeout=10)
    assert not ok
    assert_one_line(line, "TLS", "kafka.ssl_check_hostname")
    warning, stats = first_warning(checked, str(tmp_path / "on"), agent_records(10))
    assert_one_line(warning, "IP address mismatch", "kafka.ssl_check_hostname")
    assert stats["acked"] == 0 and stats["dropped"] == 0, stats
    assert wrong.handshakes_ok == 0

    unchecked = tls_settings(tls_broker, topic, bootstrap=[wrong.bootstrap], ssl_check_hostname=False,
                             request_timeout_ms=10000)
    records = agent_records(30)
    stats, warnings = run_sink(unchecked, str(tmp_path / "off"), records)
    assert warnings == [] and stats["acked"] == len(records), stats
    assert wrong.handshakes_ok >= 1  # the mismatched certificate was accepted, not bypassed


def test_missing_client_certificate_names_ssl_certfile(tls_broker, tmp_path):
    topic = unique_topic("tls-nocert")
    tls_broker.create_topic(topic, 1)
    errors_before = len(tls_broker.proxy.handshake_errors)
    settings = tls_settings(tls_broker, topic, ssl_certfile=None, ssl_keyfile=None)
    warning, stats = first_warning(settings, str(tmp_path), agent_records(10))
    assert_one_line(warning, "TLS", "kafka.ssl_certfile")
    assert stats["acked"] == 0 and stats["dropped"] == 0 and stats["spool_bytes"] > 0, stats
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in tls_broker.proxy.handshake_errors[errors_before:]
