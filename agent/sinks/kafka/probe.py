"""Is the Kafka cluster usable with these settings? For `connscope check` and start-up.

The transport steps (name resolution, TCP, TLS) are done here directly, so
each failure names its cause exactly; the Kafka steps (SASL, metadata, the
topics) go through kafka-python, whose logged reasons `explain()` reads.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

from .explain import KafkaLog, explain
from .settings import KafkaSettings, parse_address


def probe(settings: KafkaSettings, timeout: float = 5.0) -> tuple[bool, str]:
    """(ok, one line): whether a broker answers and the topics exist.

    Raises UsageError for settings that can never work (validate())."""
    settings.validate()
    deadline = time.monotonic() + timeout
    reached, problems = [], []
    for addr in settings.bootstrap:
        err = _transport(settings, addr, max(0.2, min(deadline - time.monotonic(), timeout / 2)))
        if err is None:
            reached.append(addr)
            break  # one broker is enough to ask for the rest
        problems.append(err)
    if not reached:
        return False, _transport_message(settings, problems)
    return _kafka_checks(settings, max(1.0, deadline - time.monotonic()))


def _transport(settings: KafkaSettings, addr: str, timeout: float) -> tuple[str, str] | None:
    """None when TCP (and TLS) to addr work, else (kind, detail)."""
    host, port = parse_address(addr)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return "resolve", f"{host}: {err.strerror}"
    last = ("connect", f"{addr}: no address")
    for family, stype, proto, _, sockaddr in infos:
        sock = socket.socket(family, stype, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            if settings.security_protocol in ("SSL", "SASL_SSL"):
                with _tls_context(settings).wrap_socket(sock, server_hostname=host) as tls:
                    tls.do_handshake()
            return None
        except ssl.SSLError as err:
            return "tls", f"{addr}: {err.reason or err}"
        except ssl.CertificateError as err:
            return "tls", f"{addr}: {err}"
        except socket.timeout:
            last = ("timeout", f"{addr}: no answer within {timeout:.1f} s")
        except OSError as err:
            last = ("connect", f"{addr}: {err.strerror or err}")
        finally:
            sock.close()
    return last


def _tls_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The context kafka-python builds from the same settings (kafka/net/transport.py)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = settings.ssl_check_hostname
    if settings.ssl_cafile:
        ctx.load_verify_locations(settings.ssl_cafile)
    else:
        ctx.load_default_certs()
    if settings.ssl_certfile:
        ctx.load_cert_chain(certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile)
    return ctx


def _transport_message(settings: KafkaSettings, problems: list[tuple[str, str]]) -> str:
    kinds = {k for k, _ in problems}
    details = "; ".join(d for _, d in problems)
    if kinds == {"resolve"}:
        return f"kafka: cannot resolve the broker host ({details}) (fix: correct kafka.bootstrap, or the host's DNS)"
    if "tls" in kinds:
        tls = "; ".join(d for k, d in problems if k == "tls")
        return (f"kafka: TLS handshake failed ({tls}) (fix: check kafka.ssl_cafile, kafka.ssl_certfile, "
                "kafka.ssl_keyfile, kafka.ssl_check_hostname and kafka.security_protocol)")
    return (f"kafka: no broker reachable ({details}) "
            "(fix: start the brokers, or correct kafka.bootstrap; records wait in the spool meanwhile)")


def _kafka_checks(settings: KafkaSettings, timeout: float) -> tuple[bool, str]:
    """SASL, metadata and topics, with kafka-python (on a helper thread: its
    metadata calls have no timeout of their own)."""
    log = KafkaLog.install()
    t0 = time.time()
    result: list = []

    def run():
        from kafka import KafkaConsumer
        consumer = None
        try:
            consumer = KafkaConsumer(bootstrap_servers=list(settings.bootstrap), group_id=None,
                                     enable_auto_commit=False, bootstrap_timeout_ms=int(timeout * 1000),
                                     request_timeout_ms=max(1000, int(timeout * 1000)),
                                     reconnect_backoff_max_ms=500, **settings.connection_config())
            consumer.bootstrap(timeout_ms=int(timeout * 1000))
            topics = consumer.topics()
            result.append((topics, {t: consumer.partitions_for_topic(t) for t in settings.topics() if t in topics},
                           len(consumer._client.cluster.brokers())))
        except Exception as exc:
            result.append(exc)
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:
                    pass

    worker = threading.Thread(target=run, name="connscope-kafka-probe", daemon=True)
    worker.start()
    worker.join(timeout + 1)
    if not result:
        return False, explain(None, log.since(t0) or "timed out", settings.bootstrap, settings.topic)
    if isinstance(result[0], BaseException):
        return False, explain(result[0], log.since(t0), settings.bootstrap, settings.topic)
    topics, partitions, brokers = result[0]
    missing = [t for t in settings.topics() if t not in topics]
    if missing and not settings.auto_create_topics:
        names = ", ".join(missing)
        return False, (f"kafka: topic{'s' if len(missing) > 1 else ''} {names} do{'' if len(missing) > 1 else 'es'} "
                       f"not exist on {','.join(settings.bootstrap)} "
                       "(fix: create it, set kafka.topic, or set kafka.auto_create_topics = true)")
    where = ", ".join(f"{t} ({len(p)} partitions)" for t, p in partitions.items())
    if missing:
        where += (", " if where else "") + f"{len(missing)} to be created on first use"
    return True, f"kafka: {brokers} broker{'s' if brokers != 1 else ''} reachable at {','.join(settings.bootstrap)}; topics: {where}"
