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

from kafka import errors as kerr

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
            try:
                sock.connect(sockaddr)
            except socket.timeout:
                last = ("timeout", f"{addr}: no answer within {timeout:.1f} s")
                continue
            except OSError as err:
                last = ("connect", f"{addr}: {err.strerror or err}")
                continue
            if settings.security_protocol in ("SSL", "SASL_SSL"):
                try:  # TCP works: whatever fails now is TLS (a plaintext port resets or sends junk)
                    with _tls_context(settings).wrap_socket(sock, server_hostname=host) as tls:
                        tls.do_handshake()
                except ssl.SSLError as err:
                    return "tls", f"{addr}: {err.reason or err}"
                except (ssl.CertificateError, OSError) as err:
                    return "tls", f"{addr}: {getattr(err, 'strerror', None) or err}"
            return None
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
            "(fix: start the brokers, or correct kafka.bootstrap)")


def _kafka_checks(settings: KafkaSettings, timeout: float) -> tuple[bool, str]:
    """SASL, metadata and the topics, with kafka-python's admin client (on a
    helper thread, bounded: not every call it makes has a timeout)."""
    log = KafkaLog.install()
    t0 = time.time()
    result: list = []

    def run():
        from kafka import KafkaAdminClient
        admin = None
        try:
            ms = max(1000, int(timeout * 1000))
            admin = KafkaAdminClient(bootstrap_servers=list(settings.bootstrap), bootstrap_timeout_ms=ms,
                                     request_timeout_ms=ms, reconnect_backoff_max_ms=500,
                                     **settings.connection_config())
            brokers = len(admin.describe_cluster()["brokers"])
            result.append((brokers, admin.describe_topics(settings.topics())))
        except Exception as exc:
            result.append(exc)
        finally:
            if admin is not None:
                try:
                    admin.close()
                except Exception:
                    pass

    worker = threading.Thread(target=run, name="connscope-kafka-probe", daemon=True)
    worker.start()
    worker.join(timeout + 1)
    if not result:
        return False, explain(None, log.since(t0), settings.bootstrap, settings.topic)
    if isinstance(result[0], BaseException):
        return False, explain(result[0], log.since(t0), settings.bootstrap, settings.topic)
    brokers, described = result[0]
    where = ",".join(settings.bootstrap)
    ready, missing = [], []
    for topic in described:
        code = topic["error_code"]
        if code == 0:
            ready.append(f"{topic['name']} ({len(topic['partitions'])} partitions)")
        elif code == kerr.UnknownTopicOrPartitionError.errno:
            missing.append(topic["name"])
        else:
            return False, explain(kerr.for_code(code)(), [], settings.bootstrap, topic["name"])
    if missing and not settings.auto_create_topics:
        many = len(missing) > 1
        return False, (f"kafka: topic{'s' if many else ''} {', '.join(missing)} do{'' if many else 'es'} not "
                       f"exist on {where} (fix: create {'them' if many else 'it'}, set kafka.topic, or set "
                       "kafka.auto_create_topics = true)")
    if missing:
        ready.append(f"{len(missing)} to be created on first use")
    return True, (f"kafka: {brokers} broker{'s' if brokers != 1 else ''} reachable at {where}; "
                  f"topics: {', '.join(ready)}")
