"""Records of real connections, from the kernel through the agent's pipeline
into the Kafka sink and back out of the broker, each one schema-valid."""

from __future__ import annotations

import os
import platform
import socket
import threading
import time

import orjson
import pytest

from agent.records.build import RecordBuilder
from agent.sinks.kafka import KafkaSink

from schema import assert_valid

from .conftest import consume_all
from .sinkkit import settings_for, wait_for

pytestmark = pytest.mark.kernel

CONNECTIONS = 20


def _connections(n: int) -> tuple[int, list[int], int]:
    """n loopback connections that each send a few bytes, then one refused connect.
    Returns (server port, client ports, refused port)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    sports = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        sports.append(c.getsockname()[1])
        a, _ = srv.accept()
        c.sendall(b"hello")
        assert a.recv(5) == b"hello"
        c.close()
        a.close()
    srv.close()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        refused = probe.getsockname()[1]
    with socket.socket() as c:
        assert c.connect_ex(("127.0.0.1", refused)) != 0
    return port, sports, refused


def test_real_connections_through_the_pipeline_arrive_in_kafka(mock_cluster, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (loads eBPF programs)")
    from agent.kernel.loader import LoadOptions, Tracer
    from agent.pipeline import Pipeline

    mock_cluster.create_topic("connscope", 3)
    sink = KafkaSink(settings_for(mock_cluster, key="host"), str(tmp_path))
    tracer = Tracer(LoadOptions())
    pipe = None
    try:
        pipe = Pipeline(tracer, RecordBuilder(), sink)
        runner = threading.Thread(target=pipe.run, kwargs=dict(start_fields={
            "version": "test", "kernel": platform.release(), "agent_pid": os.getpid()}), daemon=True)
        runner.start()
        wait_for(lambda: pipe.emitter.seq >= 1, 10, "the start record")
        port, sports, refused = _connections(CONNECTIONS)
        # Wait until the pipeline has numbered the records of our connections: the
        # kernel emits them within milliseconds, the reader polls every 100 ms.
        time.sleep(1.0)
        pipe.stop.set()
        runner.join(30)
        assert not runner.is_alive()
    finally:
        if pipe is not None:
            pipe.stop.set()
        tracer.close()
        sink.close()
    stats = sink.stats()
    assert stats["dropped"] == 0 and stats["spool_bytes"] == 0
    written = pipe.emitter.seq
    assert stats["acked"] >= written

    records = [orjson.loads(m.value) for m in consume_all(mock_cluster.bootstrap, "connscope", 3)]
    for rec in records:
        assert_valid(rec)
    # every record the pipeline numbered arrived (de-duplicated by (host, run_id, seq))
    seqs = sorted({r["seq"] for r in records})
    assert seqs == list(range(1, written + 1))
    assert {(r["host"], r["run_id"]) for r in records} == {(socket.gethostname(), pipe.builder.run_id)}
    by_type = {t: [r for r in records if r["type"] == t] for t in ("agent", "connect", "accept", "close")}
    assert [r["event"] for r in by_type["agent"]] == ["start", "stop"]
    ours = [r for r in by_type["connect"] if r["dport"] == port and r["pid"] == os.getpid()]
    assert sorted(r["sport"] for r in ours) == sorted(sports)
    assert all(r["result"] == "ok" and r["daddr"] == "127.0.0.1" for r in ours)
    assert len([r for r in by_type["accept"] if r["sport"] == port and r["dport"] in sports]) == CONNECTIONS
    closes = [r for r in by_type["close"] if r["dport"] == port and r["sport"] in sports]
    assert len(closes) == CONNECTIONS and all(r["closed_by"] == "local" for r in closes)
    [bad] = [r for r in by_type["connect"] if r["dport"] == refused]
    assert (bad["result"], bad["error"], bad["pid"]) == ("error", "ECONNREFUSED", os.getpid())
