"""KafkaSettings: the [kafka] keys the configuration layer exposes, and their checks."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from agent.errors import UsageError
from agent.sinks.kafka import KafkaSettings

ALLOWED_TYPES = {str, int, float, bool, list[str], str | None, int | None}


def ok(**kw) -> KafkaSettings:
    s = KafkaSettings(bootstrap=["kafka1:9092"], **kw)
    s.validate()
    return s


def test_every_key_has_an_allowed_type_help_and_a_default():
    hints = typing.get_type_hints(KafkaSettings)
    for f in dataclasses.fields(KafkaSettings):
        assert hints[f.name] in ALLOWED_TYPES, f.name
        assert f.metadata["help"], f.name
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
    assert {f.name for f in dataclasses.fields(KafkaSettings)} >= {
        "bootstrap", "topic", "key", "acks", "idempotence", "compression", "linger_ms", "batch_size",
        "request_timeout_ms", "delivery_timeout_ms", "api_version", "security_protocol", "ssl_cafile",
        "ssl_certfile", "ssl_keyfile", "ssl_check_hostname", "sasl_mechanism", "sasl_username", "sasl_password",
        "max_in_flight_bytes", "spool_max_bytes", "flush_timeout_s"}


def test_defaults_map_to_producer_options():
    conf = ok().producer_config()
    assert conf["bootstrap_servers"] == ["kafka1:9092"]
    assert (conf["acks"], conf["enable_idempotence"], conf["compression_type"]) == ("all", True, "lz4")
    assert "api_version" not in conf and conf["allow_auto_create_topics"] is False
    assert conf["security_protocol"] == "PLAINTEXT" and "sasl_mechanism" not in conf


def test_explicit_values_map_to_producer_options(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    conf = ok(acks="1", idempotence=False, compression="none", api_version="2.3", linger_ms=0,
              request_timeout_ms=40000, delivery_timeout_ms=1000, security_protocol="SASL_SSL",
              ssl_cafile=str(ca), sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
              sasl_password="p").producer_config()
    assert (conf["acks"], conf["enable_idempotence"], conf["compression_type"]) == (1, False, None)
    assert conf["api_version"] == (2, 3)
    assert conf["delivery_timeout_ms"] == 40000  # kafka-python needs >= linger + request timeout
    assert (conf["ssl_cafile"], conf["sasl_mechanism"], conf["sasl_plain_username"],
            conf["sasl_plain_password"]) == (str(ca), "SCRAM-SHA-512", "u", "p")


def test_ipv6_bootstrap_and_topic_template():
    s = ok(topic="cs.{type}")
    assert "cs.connect" in s.topics() and "cs.lost" in s.topics() and len(s.topics()) == 7
    KafkaSettings(bootstrap=["[fd00::1]:9093", "kafka-2.example:9092"]).validate()


@pytest.mark.parametrize("kw,named", [
    (dict(topic="a b"), "kafka.topic = 'a b'"),
    (dict(topic="cs.{host}"), "kafka.topic = 'cs.{host}'"),
    (dict(topic=""), "kafka.topic = ''"),
    (dict(api_version="2.x"), "kafka.api_version = '2.x'"),
    (dict(compression="brotli"), "kafka.compression = 'brotli'"),
    (dict(key="pid"), "kafka.key = 'pid'"),
    (dict(acks="1"), "kafka.idempotence = true needs kafka.acks"),
    (dict(batch_size=2 << 20, max_in_flight_bytes=8 << 20), "kafka.batch_size = 2097152"),
    (dict(max_in_flight_bytes=100_000), "kafka.max_in_flight_bytes = 100000"),
    (dict(spool_max_bytes=10), "kafka.spool_max_bytes = 10"),
    (dict(flush_timeout_s=0.0), "kafka.flush_timeout_s = 0.0"),
    (dict(ssl_cafile="/etc/hosts"), "kafka.ssl_cafile is set but kafka.security_protocol is PLAINTEXT"),
    (dict(security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem"), "kafka.ssl_cafile = '/nonexistent/ca.pem'"),
    (dict(security_protocol="SASL_PLAINTEXT"), "needs kafka.sasl_mechanism"),
    (dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u"), "needs kafka.sasl_password"),
    (dict(sasl_mechanism="PLAIN"), "kafka.sasl_mechanism is set but kafka.security_protocol is PLAINTEXT"),
    (dict(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI", sasl_username="u", sasl_password="p"),
     "kafka.sasl_mechanism = 'GSSAPI'"),
])
def test_settings_that_can_never_work_name_the_key_and_value(kw, named):
    with pytest.raises(UsageError) as err:
        KafkaSettings(bootstrap=["kafka1:9092"], **kw).validate()
    line = err.value.one_line()
    assert line.startswith("connscope: ") and named in line and "(fix: " in line, line
    assert err.value.exit_code == 2
