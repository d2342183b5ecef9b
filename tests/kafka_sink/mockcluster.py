"""librdkafka's mock Kafka cluster, started in-process through ctypes.

The mock cluster is a real Kafka wire-protocol server (localhost listeners, one
per broker) that lives inside librdkafka. We take librdkafka from the pinned
``confluent-kafka`` wheel (its ``confluent_kafka.libs/`` holds the bundled
shared object) and never use confluent_kafka's Python API: the code under test
talks to it with kafka-python, as it would to a real cluster.

Never use Debian's packaged librdkafka for this: its older mock garbles offsets.

Quirks (see tests/kafka_sink/conftest.py and the tests):
- kafka-python must be pinned to ``api_version=(2, 3)`` against it;
- no admin API: create topics here with :meth:`MockCluster.create_topic`;
- no TLS, no SASL;
- each partition keeps at most ~5 MiB: use enough partitions and check that the
  beginning offset is still 0;
- it can duplicate messages on retries even with idempotence: assert no loss,
  not exactly once;
- its Produce responses carry a fixed LogAppendTime of 1234, so kafka-python's
  ``RecordMetadata.timestamp`` is 1234 (consumed records have the real time).

The API is librdkafka's rdkafka_mock.h, which is experimental and outside its
ABI guarantees: that is why confluent-kafka is pinned to one exact version.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import threading

__all__ = ["MockCluster", "MockClusterError", "find_librdkafka", "PRODUCE"]

# Kafka protocol ApiKey of ProduceRequest, for push_request_errors().
PRODUCE = 0

_RD_KAFKA_PRODUCER = 0  # rd_kafka_type_t
_RD_KAFKA_CONF_OK = 0  # rd_kafka_conf_res_t
_ERRSTR_SIZE = 512

_lib = None
_lib_lock = threading.Lock()


class MockClusterError(RuntimeError):
    """librdkafka could not be found or loaded, or a mock call failed."""


def find_librdkafka() -> str:
    """Path of the librdkafka shared object bundled with confluent_kafka.

    auditwheel puts it in ``confluent_kafka.libs/`` with a hashed name
    (``librdkafka-<hash>.so.1``); other builds have used ``confluent_kafka/.libs``.
    Found by glob, so a new pin does not need a new name here.
    """
    try:
        import confluent_kafka
    except ImportError as e:  # pragma: no cover - a test dependency
        raise MockClusterError(
            "confluent_kafka is not importable; it is a test dependency: "
            "pip install -e '.[test]'") from e
    pkg_dir = os.path.dirname(os.path.abspath(confluent_kafka.__file__))
    site = os.path.dirname(pkg_dir)
    patterns = [
        os.path.join(site, "confluent_kafka.libs", "librdkafka*.so*"),
        os.path.join(pkg_dir, ".libs", "librdkafka*.so*"),
        os.path.join(pkg_dir, "librdkafka*.so*"),
    ]
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise MockClusterError(
        f"no bundled librdkafka next to {pkg_dir} (looked for {', '.join(patterns)}); "
        "install the manylinux wheel of the pinned confluent-kafka, not a source build "
        "against Debian's librdkafka (whose mock cluster garbles offsets)")


def _load():
    """Load librdkafka once and declare every function used (restype and argtypes)."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = find_librdkafka()
        lib = ctypes.CDLL(path)
        vp, c_int, c_char_p, c_size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t

        def proto(name, restype, *argtypes):
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = list(argtypes)

        # rd_kafka_conf_t *rd_kafka_conf_new(void);
        proto("rd_kafka_conf_new", vp)
        # rd_kafka_conf_res_t rd_kafka_conf_set(rd_kafka_conf_t *, const char *name,
        #                                       const char *value, char *errstr, size_t);
        proto("rd_kafka_conf_set", c_int, vp, c_char_p, c_char_p, c_char_p, c_size_t)
        # void rd_kafka_conf_destroy(rd_kafka_conf_t *);
        proto("rd_kafka_conf_destroy", None, vp)
        # rd_kafka_t *rd_kafka_new(rd_kafka_type_t, rd_kafka_conf_t *, char *errstr, size_t);
        proto("rd_kafka_new", vp, c_int, vp, c_char_p, c_size_t)
        # void rd_kafka_destroy(rd_kafka_t *);
        proto("rd_kafka_destroy", None, vp)
        # const char *rd_kafka_err2str(rd_kafka_resp_err_t);
        proto("rd_kafka_err2str", c_char_p, c_int)
        # rd_kafka_mock_cluster_t *rd_kafka_mock_cluster_new(rd_kafka_t *, int broker_cnt);
        proto("rd_kafka_mock_cluster_new", vp, vp, c_int)
        # void rd_kafka_mock_cluster_destroy(rd_kafka_mock_cluster_t *);
        proto("rd_kafka_mock_cluster_destroy", None, vp)
        # const char *rd_kafka_mock_cluster_bootstraps(const rd_kafka_mock_cluster_t *);
        proto("rd_kafka_mock_cluster_bootstraps", c_char_p, vp)
        # rd_kafka_resp_err_t rd_kafka_mock_topic_create(rd_kafka_mock_cluster_t *,
        #     const char *topic, int partition_cnt, int replication_factor);
        proto("rd_kafka_mock_topic_create", c_int, vp, c_char_p, c_int, c_int)
        # rd_kafka_resp_err_t rd_kafka_mock_broker_set_down(rd_kafka_mock_cluster_t *, int32_t);
        proto("rd_kafka_mock_broker_set_down", c_int, vp, ctypes.c_int32)
        # rd_kafka_resp_err_t rd_kafka_mock_broker_set_up(rd_kafka_mock_cluster_t *, int32_t);
        proto("rd_kafka_mock_broker_set_up", c_int, vp, ctypes.c_int32)
        # rd_kafka_resp_err_t rd_kafka_mock_broker_set_rtt(rd_kafka_mock_cluster_t *,
        #     int32_t broker_id, int rtt_ms);
        proto("rd_kafka_mock_broker_set_rtt", c_int, vp, ctypes.c_int32, c_int)
        # void rd_kafka_mock_push_request_errors_array(rd_kafka_mock_cluster_t *,
        #     int16_t ApiKey, size_t cnt, const rd_kafka_resp_err_t *errors);
        # void rd_kafka_mock_topic_set_error(rd_kafka_mock_cluster_t *, const char *topic,
        #                                   rd_kafka_resp_err_t err);
        proto("rd_kafka_mock_topic_set_error", None, vp, c_char_p, c_int)
        proto("rd_kafka_mock_push_request_errors_array", None, vp, ctypes.c_int16, c_size_t,
              ctypes.POINTER(c_int))
        lib._path = path
        _lib = lib
        return lib


class MockCluster:
    """A mock Kafka cluster of ``brokers`` brokers (ids 1..brokers) on localhost.

    Use as a context manager, or call :meth:`close`; it is also closed at exit.
    """

    def __init__(self, brokers: int = 1):
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        self._lib = _load()
        self.library_path: str = self._lib._path
        self.brokers = brokers
        self._rk = None
        self._mcluster = None
        self._closed = False
        self._lock = threading.Lock()
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)

        # rd_kafka_mock_cluster_new() needs an rd_kafka_t for its own bookkeeping
        # (logging, the mock's thread). A producer handle with no bootstrap.servers
        # never connects anywhere. Only errors are logged, to keep test output clean.
        conf = self._lib.rd_kafka_conf_new()
        if not conf:
            raise MockClusterError("rd_kafka_conf_new() returned NULL")
        for name, value in (("log_level", "3"),):
            res = self._lib.rd_kafka_conf_set(conf, name.encode(), value.encode(), errstr, _ERRSTR_SIZE)
            if res != _RD_KAFKA_CONF_OK:
                self._lib.rd_kafka_conf_destroy(conf)
                raise MockClusterError(f"rd_kafka_conf_set({name}={value}): {errstr.value.decode(errors='replace')}")
        # On success rd_kafka_new() takes ownership of conf; on failure we still own it.
        rk = self._lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not rk:
            self._lib.rd_kafka_conf_destroy(conf)
            raise MockClusterError(f"rd_kafka_new(): {errstr.value.decode(errors='replace')}")
        self._rk = rk

        mcluster = self._lib.rd_kafka_mock_cluster_new(rk, brokers)
        if not mcluster:
            self._lib.rd_kafka_destroy(rk)
            self._rk = None
            raise MockClusterError(f"rd_kafka_mock_cluster_new(brokers={brokers}) returned NULL")
        self._mcluster = mcluster
        atexit.register(self.close)

    # -- plumbing -----------------------------------------------------------

    def __enter__(self) -> "MockCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.bootstrap
        return f"<MockCluster brokers={self.brokers} {state}>"

    def _handle(self):
        if self._closed or not self._mcluster:
            raise MockClusterError("mock cluster is closed")
        return self._mcluster

    def _check(self, what: str, err: int) -> None:
        if err:
            msg = self._lib.rd_kafka_err2str(err)
            raise MockClusterError(f"{what}: error {err}: {msg.decode(errors='replace') if msg else '?'}")

    def _broker(self, broker_id: int) -> int:
        # librdkafka takes -1 as "all brokers"; keep that available, reject the rest.
        if broker_id != -1 and not 1 <= broker_id <= self.brokers:
            raise ValueError(f"broker_id {broker_id} not in 1..{self.brokers} (or -1 for all)")
        return broker_id

    # -- the API the tests use ---------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for clients: "127.0.0.1:port,..." (one per broker)."""
        return self._lib.rd_kafka_mock_cluster_bootstraps(self._handle()).decode()

    def create_topic(self, name: str, partitions: int, replication: int = 1) -> None:
        """Create a topic: the mock has no CreateTopics (admin) API.

        Partition leaders are spread over the brokers by the mock.
        """
        self._check(f"create_topic({name!r}, {partitions}, {replication})",
                    self._lib.rd_kafka_mock_topic_create(self._handle(), name.encode(), partitions, replication))

    def broker_down(self, broker_id: int) -> None:
        """Disconnect the broker's clients and refuse new connections (no leader change)."""
        self._check(f"broker_down({broker_id})",
                    self._lib.rd_kafka_mock_broker_set_down(self._handle(), self._broker(broker_id)))

    def broker_up(self, broker_id: int) -> None:
        """Let the broker accept connections again."""
        self._check(f"broker_up({broker_id})",
                    self._lib.rd_kafka_mock_broker_set_up(self._handle(), self._broker(broker_id)))

    def set_rtt(self, broker_id: int, ms: int) -> None:
        """Delay every response of the broker by ``ms`` milliseconds (a slow broker)."""
        self._check(f"set_rtt({broker_id}, {ms})",
                    self._lib.rd_kafka_mock_broker_set_rtt(self._handle(), self._broker(broker_id), int(ms)))

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """Fail the next ``len(errors)`` requests of ``api_key`` (cluster-wide), in order.

        ``api_key`` is the protocol ApiKey: Produce is 0 (:data:`PRODUCE`). Each error
        is a Kafka error code, e.g. 6 NOT_LEADER_OR_FOLLOWER; librdkafka's
        ``RD_KAFKA_RESP_ERR__TRANSPORT`` (-195) makes the broker disconnect instead.
        """
        arr = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(self._handle(), api_key, len(errors), arr)

    def topic_set_error(self, topic: str, error: int) -> None:
        """Answer Metadata requests for ``topic`` with a Kafka error code from now on,
        e.g. 3 UNKNOWN_TOPIC_OR_PARTITION or 29 TOPIC_AUTHORIZATION_FAILED (0 clears it).

        The mock otherwise creates any topic a client asks about, whatever the
        client's allow_auto_create_topics says."""
        self._lib.rd_kafka_mock_topic_set_error(self._handle(), topic.encode(), int(error))

    def close(self) -> None:
        """Destroy the cluster, then its rd_kafka_t. Idempotent; also runs at exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            mcluster, self._mcluster = self._mcluster, None
            rk, self._rk = self._rk, None
        if mcluster:
            self._lib.rd_kafka_mock_cluster_destroy(mcluster)
        if rk:
            self._lib.rd_kafka_destroy(rk)
        try:
            atexit.unregister(self.close)
        except Exception:  # pragma: no cover
            pass
