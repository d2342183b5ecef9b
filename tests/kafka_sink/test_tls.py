"""The TLS terminator in front of Tansu (tests/kafka_sink/tlsproxy.py), proven with kafka-python.

Mutual TLS for real: the proxy requires a client certificate from our CA, the
client checks the proxy's certificate and name. Each failure is asserted on both
ends: the client does not get through, and the proxy saw the matching alert.
"""

from __future__ import annotations

import ssl

import pytest

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from .tansu import consume_to_end, unique_topic

# Fail fast: kafka-python retries a bootstrap that fails its handshake for 30 s by default.
FAST = dict(bootstrap_timeout_ms=2000, max_block_ms=2000, request_timeout_ms=3000)


def _refused(bootstrap: str, conf: dict) -> None:
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        KafkaProducer(bootstrap_servers=bootstrap, **FAST, **conf).close()


def test_mutual_tls_delivers_through_the_proxy(tls_broker):
    topic = unique_topic("tls")
    tls_broker.create_topic(topic, 2)
    before = tls_broker.proxy.handshakes_ok
    p = KafkaProducer(bootstrap_servers=tls_broker.bootstrap, acks="all", **tls_broker.client_conf())
    try:
        futures = [p.send(topic, key=b"k%d" % (i % 3), value=b"v%03d" % i) for i in range(200)]
        p.flush(timeout=20)
        metas = [f.get(timeout=5) for f in futures]
    finally:
        p.close(timeout=5)
    got = consume_to_end(tls_broker.bootstrap, topic, 2, expect=200, **tls_broker.client_conf())
    assert sorted(m.value for m in got) == [b"v%03d" % i for i in range(200)]
    assert {(m.partition, m.offset) for m in got} == {(md.partition, md.offset) for md in metas}
    assert tls_broker.proxy.handshakes_ok > before


def test_broker_metadata_points_clients_at_the_proxy(tls_broker):
    """Tansu advertises the proxy: no connection after bootstrap can skip TLS."""
    from kafka import KafkaConsumer
    c = KafkaConsumer(bootstrap_servers=tls_broker.bootstrap, group_id=None, **tls_broker.client_conf())
    try:
        c.topics()
        brokers = c._client.cluster.brokers()
    finally:
        c.close()
    assert {(b.host, b.port) for b in brokers} == {("127.0.0.1", tls_broker.proxy.port)}


def test_wrong_ca_is_refused_by_the_client(tls_broker):
    errors_before = len(tls_broker.proxy.handshake_errors)
    _refused(tls_broker.bootstrap, tls_broker.client_conf(ssl_cafile=tls_broker.certs.other_ca))
    # The client aborted: it could not chain the proxy's certificate to the CA it was given.
    assert set(tls_broker.proxy.handshake_errors[errors_before:]) == {"TLSV1_ALERT_UNKNOWN_CA"}


def test_missing_client_certificate_is_refused_by_the_proxy(tls_broker):
    errors_before = len(tls_broker.proxy.handshake_errors)
    _refused(tls_broker.bootstrap, tls_broker.client_conf(ssl_certfile=None, ssl_keyfile=None))
    assert set(tls_broker.proxy.handshake_errors[errors_before:]) == {"PEER_DID_NOT_RETURN_A_CERTIFICATE"}


def test_hostname_mismatch_fails_only_with_the_check_on(tls_broker):
    wrong = tls_broker.extra_proxy(tls_broker.certs.wrongname_cert, tls_broker.certs.wrongname_key)
    _refused(wrong.bootstrap, tls_broker.client_conf(ssl_check_hostname=True))
    assert wrong.handshakes_ok == 0
    assert set(wrong.handshake_errors) == {"SSLV3_ALERT_BAD_CERTIFICATE"}
    # The same certificate is accepted with the check off: only the name was wrong.
    topic = unique_topic("tls-nocheck")
    tls_broker.create_topic(topic, 1)
    p = KafkaProducer(bootstrap_servers=wrong.bootstrap, **FAST,
                      **tls_broker.client_conf(ssl_check_hostname=False))
    try:
        assert p.send(topic, b"unchecked").get(timeout=10).offset == 0
    finally:
        p.close(timeout=5)
    assert wrong.handshakes_ok >= 1


def test_the_certificates_chain_and_name_as_intended(tls_broker):
    """Guards the fixture itself: a handshake with Python's ssl against the proxy."""
    import socket
    ctx = ssl.create_default_context(cafile=tls_broker.certs.ca)
    ctx.load_cert_chain(tls_broker.certs.client_cert, tls_broker.certs.client_key)
    with socket.create_connection(("127.0.0.1", tls_broker.proxy.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            san = s.getpeercert()["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in san and ("DNS", "localhost") in san
