"""The Kafka sink's settings: the contract with the configuration layer.

Each field `foo_bar` is the TOML key `[kafka] foo_bar`, the environment
variable `CONNSCOPE_KAFKA_FOO_BAR` and the flag `--kafka-foo-bar`
(agent/config reads the fields and their metadata: `help`, `choices`,
`minimum`, `reload`). Types are limited to what those three sources can
carry: str, int, float, bool, list[str], and optional str/int.

`validate()` checks what the loader cannot (formats, combinations, files)
and raises UsageError naming `kafka.<key>`, the bad value and what is
allowed. Only settings that can never work are refused: a broker that is
down or a host name that does not resolve yet is not a usage error (the
sink spools and retries).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

from ...errors import UsageError

# Kafka's own limits on topic names (kafka.common.internals.Topic).
_TOPIC_CHARS = re.compile(r"^[a-zA-Z0-9._-]+$")
_TOPIC_MAX = 249
# Record types of schema v1, for topic templates with {type}.
RECORD_TYPES = ("connect", "accept", "close", "lost", "summary", "diagnosis", "agent")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# The name systemd/dropins/kafka-sasl-credential.conf loads it under.
CREDENTIAL_NAME = "kafka_sasl_password"


def _key(help: str, *, default=None, default_factory=None, choices: tuple = (), minimum: float | None = None,
         secret: bool = False):
    # Every Kafka key needs a new producer: on reload the agent closes the
    # sink (what is not acknowledged goes to the spool) and opens a new one on
    # the same spool, which replays it. So all of them apply live.
    # `secret`: never printed (agent/config/secrets.py masks it).
    meta = {"help": help, "choices": choices, "minimum": minimum, "reload": "live", "secret": secret}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class KafkaSettings:
    bootstrap: list[str] = _key(
        "bootstrap brokers, HOST:PORT each ([v6addr]:PORT for IPv6 literals)", default_factory=list)
    topic: str = _key(
        'topic for every record; "{type}" in it is replaced by the record type '
        '(one topic per type, e.g. "connscope.{type}")', default="connscope")
    key: str = _key(
        "partition key: host keeps all of a host's records in one partition, in order; "
        "host_pid spreads a host over partitions, ordered per process", choices=("host", "host_pid"),
        default="host")
    acks: str = _key("acknowledgements the broker waits for: all (every in-sync replica), 1 (the leader), 0 (none)",
                     choices=("all", "1", "0"), default="all")
    idempotence: bool = _key("idempotent producer: the broker drops the duplicates of a producer's retries "
                             "(needs acks = all)", default=True)
    compression: str = _key("compression codec of record batches",
                            choices=("none", "gzip", "lz4", "zstd", "snappy"), default="lz4")
    linger_ms: int = _key("milliseconds a batch waits for more records before it is sent", minimum=0, default=50)
    batch_size: int = _key("upper bound of one partition's batch, bytes", minimum=1024, default=262144)
    request_timeout_ms: int = _key("milliseconds to wait for a broker's response to one request",
                                   minimum=1000, default=30000)
    delivery_timeout_ms: int = _key(
        "milliseconds a record may take to be acknowledged, retries included; after that it goes back "
        "to the spool and is sent again", minimum=1000, default=120000)
    api_version: str | None = _key(
        'Kafka protocol version to speak, e.g. "2.3"; empty = ask the broker at connection', default=None)
    security_protocol: str = _key("transport: plain TCP or TLS, with or without SASL",
                                  choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                                  default="PLAINTEXT")
    ssl_cafile: str | None = _key("PEM file of the CAs that sign the brokers' certificates "
                                  "(empty = the system's CAs)", default=None)
    ssl_certfile: str | None = _key("PEM client certificate, for brokers that require one (mutual TLS)",
                                    default=None)
    ssl_keyfile: str | None = _key("PEM private key of ssl_certfile", default=None)
    ssl_check_hostname: bool = _key("check that the broker's certificate names the host connected to",
                                    default=True)
    sasl_mechanism: str | None = _key("SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)", choices=SASL_MECHANISMS,
                                      default=None)
    sasl_username: str | None = _key("SASL user name", default=None)
    sasl_password: str | None = _key("SASL password; prefer sasl_password_file or the systemd credential: "
                                     "a value here is in this file, and as a flag in /proc/PID/cmdline",
                                     default=None, secret=True)
    sasl_password_file: str | None = _key(
        "file holding the SASL password (not world-readable), read at start and on reload; unset, "
        "$CREDENTIALS_DIRECTORY/kafka_sasl_password (systemd LoadCredential=) is used when present",
        default=None)
    auto_create_topics: bool = _key("let the broker create a missing topic on first use "
                                    "(when its auto.create.topics.enable allows it)", default=False)
    max_in_flight_bytes: int = _key(
        "bytes handed to the Kafka client and not yet acknowledged; beyond that records wait in memory",
        minimum=65536, default=8 << 20)
    memory_max_bytes: int = _key(
        "bytes of records waiting in memory for room in flight while brokers answer; beyond that, and "
        "whenever delivery fails, records wait in the spool on disk", minimum=0, default=64 << 20)
    spool_max_bytes: int = _key(
        "bytes the on-disk spool may hold while brokers are unreachable; beyond that records are dropped "
        "and counted in a lost record", minimum=4096, default=1 << 30)
    trouble_report_s: float = _key("seconds between the stderr lines (the journal) that say delivery is still "
                                   "failing: for how long, the spool's fill and the last error", minimum=1.0,
                                   default=60.0)
    flush_timeout_s: float = _key("seconds a stop waits for the brokers to acknowledge what is in flight; "
                                  "the rest stays in the spool for the next start", minimum=0.1, default=10.0)

    # --- checks ----------------------------------------------------------------
    def validate(self) -> None:
        """Raises UsageError for a setting that can never work."""
        if not self.bootstrap:
            _bad("bootstrap", self.bootstrap, 'one or more HOST:PORT, e.g. bootstrap = ["kafka1:9092"]')
        for item in self.bootstrap:
            parse_address(item)
        self._check_topic()
        self._check_choices()
        if self.api_version is not None and not re.fullmatch(r"\d+\.\d+(\.\d+)?", self.api_version):
            _bad("api_version", self.api_version, 'a version like "2.3" or "3.6.0", or empty to ask the broker')
        if self.idempotence and self.acks != "all":
            raise UsageError(f"kafka.idempotence = true needs kafka.acks = \"all\", not {self.acks!r}",
                             "set kafka.acks = \"all\" or kafka.idempotence = false")
        for name in ("linger_ms", "batch_size", "request_timeout_ms", "delivery_timeout_ms",
                     "max_in_flight_bytes", "memory_max_bytes", "spool_max_bytes", "flush_timeout_s"):
            meta = next(f.metadata for f in fields(self) if f.name == name)
            value = getattr(self, name)
            if value < meta["minimum"]:
                _bad(name, value, f"a value >= {meta['minimum']:g}")
        if self.batch_size > 1 << 20:
            _bad("batch_size", self.batch_size, "at most 1048576 (the producer's largest request)")
        if self.max_in_flight_bytes < self.batch_size:
            _bad("max_in_flight_bytes", self.max_in_flight_bytes, f"at least kafka.batch_size ({self.batch_size})")
        self._check_tls()
        self._check_sasl()

    def _check_topic(self) -> None:
        rest = self.topic.replace("{type}", "")
        if "{" in rest or "}" in rest:
            _bad("topic", self.topic, 'a topic name; the only placeholder is "{type}"')
        for name in self.topics() if self.topic else [""]:
            if not name or len(name) > _TOPIC_MAX or not _TOPIC_CHARS.match(name) or name in (".", ".."):
                _bad("topic", self.topic, f"1 to {_TOPIC_MAX} of a-z A-Z 0-9 . _ - (plus \"{{type}}\")")

    def _check_choices(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                _bad(f.name, value, "one of " + ", ".join(choices))

    def _check_tls(self) -> None:
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is None:
                continue
            if not tls:
                raise UsageError(f"kafka.{name} is set but kafka.security_protocol is {self.security_protocol}",
                                 "set kafka.security_protocol = \"SSL\" or \"SASL_SSL\", or unset it")
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                _bad(name, path, "a readable PEM file")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise UsageError("kafka.ssl_keyfile is set without kafka.ssl_certfile",
                             "set kafka.ssl_certfile to the client certificate, or unset kafka.ssl_keyfile")

    def _check_sasl(self) -> None:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl:
            if self.sasl_mechanism is None:
                raise UsageError(f"kafka.security_protocol = {self.security_protocol} needs kafka.sasl_mechanism",
                                 "set kafka.sasl_mechanism to one of " + ", ".join(SASL_MECHANISMS))
            for name in ("sasl_username", "sasl_password"):
                if not getattr(self, name):
                    raise UsageError(f"kafka.sasl_mechanism = {self.sasl_mechanism} needs kafka.{name}",
                                     f"set kafka.{name} (or CONNSCOPE_KAFKA_{name.upper()})")
        elif self.sasl_mechanism is not None:
            raise UsageError(f"kafka.sasl_mechanism is set but kafka.security_protocol is {self.security_protocol}",
                             "set kafka.security_protocol = \"SASL_PLAINTEXT\" or \"SASL_SSL\"")

    # --- secrets -----------------------------------------------------------------
    def resolve_secrets(self, env) -> None:
        """Fills sasl_password from sasl_password_file, or else from the systemd
        credential; UsageError (one line, naming the file) when it cannot be
        read or is world-readable."""
        path, origin = self.sasl_password_file, "kafka.sasl_password_file"
        if path and self.sasl_password:
            raise UsageError("kafka.sasl_password and kafka.sasl_password_file are both set",
                             "keep only kafka.sasl_password_file")
        if not path and not self.sasl_password and env.get("CREDENTIALS_DIRECTORY"):
            cred = os.path.join(env["CREDENTIALS_DIRECTORY"], CREDENTIAL_NAME)
            if os.path.exists(cred):
                path, origin = cred, f"systemd credential {CREDENTIAL_NAME}"
        if not path:
            return
        try:
            mode = os.stat(path).st_mode
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"{origin}: cannot read {path}: {getattr(err, 'strerror', None) or err}",
                             "make it a file the agent's user can read") from None
        if mode & 0o004:
            raise UsageError(f"{origin}: {path} is world-readable", f"chmod o-r {path}")
        self.sasl_password = text.rstrip("\r\n") or None

    # --- derived ---------------------------------------------------------------
    def topics(self) -> list[str]:
        """Every topic the sink can write to."""
        if "{type}" not in self.topic:
            return [self.topic]
        return [self.topic.replace("{type}", t) for t in RECORD_TYPES]

    def producer_config(self) -> dict:
        """Keyword arguments for kafka-python's KafkaProducer (the sink adds its own fixed ones)."""
        conf = dict(
            bootstrap_servers=list(self.bootstrap),
            acks={"all": "all", "1": 1, "0": 0}[self.acks],
            enable_idempotence=self.idempotence,
            compression_type=None if self.compression == "none" else self.compression,
            linger_ms=self.linger_ms,
            batch_size=self.batch_size,
            request_timeout_ms=self.request_timeout_ms,
            # kafka-python requires delivery >= linger + request timeout
            delivery_timeout_ms=max(self.delivery_timeout_ms, self.linger_ms + self.request_timeout_ms),
            allow_auto_create_topics=self.auto_create_topics,
        )
        conf.update(self.connection_config())
        return conf

    def connection_config(self) -> dict:
        """The settings every kafka-python client needs to reach the brokers (producer, probe)."""
        conf: dict = dict(security_protocol=self.security_protocol)
        if self.api_version is not None:
            conf["api_version"] = tuple(int(p) for p in self.api_version.split("."))
        if self.security_protocol in ("SSL", "SASL_SSL"):
            conf.update(ssl_cafile=self.ssl_cafile, ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
                        ssl_check_hostname=self.ssl_check_hostname)
        if self.security_protocol.startswith("SASL_"):
            conf.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self.sasl_password)
        return conf


def _bad(name: str, value, allowed: str):
    raise UsageError(f"kafka.{name} = {value!r} is not valid", f"use {allowed}")


def parse_address(text: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); UsageError naming kafka.bootstrap otherwise."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([A-Za-z0-9._-]+):(\d+)", text.strip())
    if m is None:
        _bad("bootstrap", text, "HOST:PORT, or [IPv6]:PORT")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        _bad("bootstrap", text, "a port from 1 to 65535")
    if host.startswith(("-", ".")) or ".." in host:
        _bad("bootstrap", text, "a valid host name or address")
    return host, int(port)
