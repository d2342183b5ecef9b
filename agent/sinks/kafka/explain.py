"""Why Kafka delivery fails, as one line naming the setting to change.

kafka-python reports most root causes (refused connections, TLS handshakes,
SASL failures, unknown topics) only through its loggers, and then raises a
generic KafkaTimeoutError. `KafkaLog` keeps its recent messages instead of
letting them spill onto the agent's stderr, and `explain()` reads the
exception together with those messages.
"""

from __future__ import annotations

import collections
import logging
import threading

from kafka import errors as kerr

_LOGGER = "kafka"


class KafkaLog(logging.Handler):
    """Recent warning/error messages of kafka-python (process-wide, one instance)."""

    _instance: "KafkaLog | None" = None
    _lock = threading.Lock()

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.recent: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=64)

    @classmethod
    def install(cls) -> "KafkaLog":
        """Routes kafka-python's logs here (and no longer to stderr); idempotent."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = KafkaLog()
                log = logging.getLogger(_LOGGER)
                log.addHandler(cls._instance)
                log.propagate = False
                if log.level == logging.NOTSET or log.level > logging.WARNING:
                    log.setLevel(logging.WARNING)
            return cls._instance

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.recent.append((record.created, record.thread, record.getMessage()))
        except Exception:  # a log message that cannot be formatted must not break delivery
            pass

    def since(self, t0: float, threads: set[int] | None = None) -> list[str]:
        """Messages logged after time t0 (time.time()), oldest first; only
        those of these threads (idents) when given. A producer the sink gave
        up on may still be logging its own trouble: the current one's cause
        must not be taken from it."""
        return [msg for t, th, msg in list(self.recent) if t >= t0 and (threads is None or th in threads)]


def explain(exc: BaseException | None, log_lines: list[str], bootstrap: list[str], topic: str | None = None) -> str:
    """One line: the cause and the setting to change ("kafka: ... (fix: ...)").

    The exception decides when it is specific; otherwise the newest log
    message with a known cause; otherwise the exception's kind."""
    where = ",".join(bootstrap)
    line = _by_exception(exc, where, topic)
    if line:
        return line
    for msg in reversed([str(exc)] + log_lines if exc is not None else log_lines):
        line = _by_text(msg, where, topic)
        if line:
            return line
    if isinstance(exc, kerr.KafkaTimeoutError) or exc is None:
        return (f"kafka: no broker at {where} answered in time "
                "(fix: check that the brokers are up and kafka.bootstrap is right)")
    if isinstance(exc, kerr.KafkaConnectionError):
        return f"kafka: lost the connection to {where} (fix: check the brokers and kafka.bootstrap)"
    return f"kafka: delivery failed: {type(exc).__name__}: {str(exc)[:200]}".replace("\n", " ")


def _by_exception(exc, where: str, topic: str | None) -> str | None:
    if isinstance(exc, kerr.TopicAuthorizationFailedError):
        return (f"kafka: not authorized to write topic {topic} "
                "(fix: grant WRITE on it to kafka.sasl_username, or set kafka.topic)")
    if isinstance(exc, kerr.SaslAuthenticationFailedError):
        return _SASL_FAILED.format(where=where)
    if isinstance(exc, kerr.UnsupportedSaslMechanismError):
        return _SASL_MECHANISM.format(where=where)
    if isinstance(exc, kerr.UnknownTopicOrPartitionError):
        return _NO_TOPIC.format(topic=topic, where=where)
    if isinstance(exc, (kerr.MessageSizeTooLargeError, kerr.RecordListTooLargeError)):
        return "kafka: the broker refused a record as too large (fix: raise the topic's max.message.bytes)"
    return None


_SASL_FAILED = ("kafka: SASL authentication failed at {where} "
                "(fix: check kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password)")
_SASL_MECHANISM = ("kafka: the brokers at {where} do not accept this SASL mechanism "
                   "(fix: set kafka.sasl_mechanism to one they enable, or check kafka.security_protocol)")
_NO_TOPIC = ("kafka: topic {topic} does not exist on {where} "
             "(fix: create it, set kafka.topic, or set kafka.auto_create_topics = true)")


def _by_text(msg: str, where: str, topic: str | None) -> str | None:
    low = msg.lower()
    if "not authorized" in low or "authorizationfailed" in low:
        return (f"kafka: not authorized to write topic {topic} "
                "(fix: grant WRITE on it to kafka.sasl_username, or set kafka.topic)")
    if "authentication failed" in low or "saslauthenticationfailed" in low:
        return _SASL_FAILED.format(where=where)
    if "unsupportedsaslmechanism" in low or "unsupported sasl" in low:
        return _SASL_MECHANISM.format(where=where)
    if any(s in low for s in ("certificate_verify_failed", "certificate verify failed", "hostname mismatch")):
        return (f"kafka: TLS: the broker's certificate at {where} is not trusted ({_ssl_reason(msg)}) "
                "(fix: set kafka.ssl_cafile to the CA that signed it; see kafka.ssl_check_hostname)")
    if any(s in low for s in ("ssl", "tls", "handshake failed", "wrong version number")):
        return (f"kafka: TLS handshake with {where} failed ({_ssl_reason(msg)}) "
                "(fix: check kafka.security_protocol, kafka.ssl_cafile, kafka.ssl_certfile and kafka.ssl_keyfile)")
    if any(s in low for s in ("name or service not known", "nodename nor servname", "temporary failure in name",
                              "dns lookup failed", "no address associated", "gaierror", "name resolution")):
        return (f"kafka: cannot resolve the broker host in kafka.bootstrap ({where}) "
                "(fix: correct kafka.bootstrap, or the host's DNS)")
    if "not found in cluster metadata" in low or "unknowntopicorpartition" in low:
        return _NO_TOPIC.format(topic=topic, where=where)
    if "connection refused" in low or "econnrefused" in low or "errno 111" in low:
        return (f"kafka: no broker reachable: {where} refused the connection "
                "(fix: start the broker or correct kafka.bootstrap)")
    return None


def _ssl_reason(text: str) -> str:
    for marker in ("[SSL", "certificate verify failed", "Handshake failed", "SSLError", "wrong version number"):
        i = text.find(marker)
        if i >= 0:
            return text[i:i + 120].split(" (backoff")[0].strip()
    return "see the broker's TLS settings"


def is_record_error(exc: BaseException) -> bool:
    """An error about the record itself: sending it again can never succeed."""
    return isinstance(exc, (kerr.MessageSizeTooLargeError, kerr.InvalidRecordError, kerr.CorruptRecordError,
                            kerr.RecordListTooLargeError, kerr.InvalidTimestampError))
