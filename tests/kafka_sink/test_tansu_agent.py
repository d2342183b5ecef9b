"""The real agent (`connscope run --output kafka`) into Tansu: records of real loopback connections.

The agent traces connections this test makes to a listener of its own; the
records travel the whole pipeline (kernel, decode, records, Kafka sink) and are
read back from the broker: schema-valid, numbered without a gap, in offset
order per host key, and exactly the connections made, with their ports and pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import orjson
import pytest

from ..agentrun import REPO
from ..schema import assert_valid
from .tansu import consume_to_end, unique_topic

pytestmark = pytest.mark.kernel
CONNECTIONS = 5


def read_records(tansu, topic: str, **kw) -> list[dict]:
    return [orjson.loads(m.value) for m in consume_to_end(tansu.bootstrap, topic, 1, **kw)]


def wait_records(tansu, topic: str, predicate, count: int, timeout: float, proc) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in read_records(tansu, topic, idle=0.2) if predicate(r)]
        if len(found) >= count:
            return found
        assert proc.poll() is None, f"agent exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{len(found)}/{count} records after {timeout}s"
        time.sleep(0.2)


def test_agent_delivers_real_connection_records(tansu, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (the agent loads eBPF programs)")
    topic = unique_topic("agent")
    tansu.create_topic(topic, 1)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--output", "kafka", "--kafka-bootstrap", tansu.bootstrap,
         "--kafka-topic", topic, "--kafka-linger-ms", "5", "--state-dir", str(tmp_path / "state"),
         "--port", str(port), "--status-interval", "0"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        start = wait_records(tansu, topic, lambda r: r["type"] == "agent" and r["event"] == "start", 1, 60, proc)
        assert start[0]["pid"] == proc.pid

        client_ports = []
        for _ in range(CONNECTIONS):
            c = socket.create_connection(("127.0.0.1", port))
            s, _addr = listener.accept()
            client_ports.append(c.getsockname()[1])
            c.sendall(b"x")
            assert s.recv(1) == b"x"
            c.close()  # the client closes first, as a pool-less client does
            s.close()
        ours = lambda r: r.get("dport") == port or r.get("sport") == port  # noqa: E731
        wait_records(tansu, topic, ours, 4 * CONNECTIONS, 20, proc)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
        err.close()
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")

    records = read_records(tansu, topic, idle=0.5)
    for r in records:
        assert_valid(r)
    # One run, numbered 1..N in offset order (one host key: one partition), nothing missing.
    assert {r["run_id"] for r in records} == {start[0]["run_id"]}
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), stderr
    assert records[-1]["type"] == "agent" and records[-1]["event"] == "stop"

    me, comm = os.getpid(), open("/proc/self/comm").read().strip()
    conns = [r for r in records if r["type"] in ("connect", "accept", "close")]
    connects = sorted((r for r in conns if r["type"] == "connect"), key=lambda r: r["sport"])
    assert [(r["sport"], r["dport"], r["result"], r["pid"], r["comm"]) for r in connects] == [
        (p, port, "ok", me, comm) for p in sorted(client_ports)]
    accepts = [r for r in conns if r["type"] == "accept"]
    assert sorted(r["dport"] for r in accepts) == sorted(client_ports)
    assert all(r["sport"] == port for r in accepts)
    closes = [r for r in conns if r["type"] == "close"]
    outbound = sorted((r for r in closes if r["direction"] == "outbound"), key=lambda r: r["sport"])
    assert [(r["sport"], r["closed_by"], r["time_wait"]) for r in outbound] == [
        (p, "local", True) for p in sorted(client_ports)]
    assert sorted(r["dport"] for r in closes if r["direction"] == "inbound") == sorted(client_ports)
    assert len(conns) == 4 * CONNECTIONS
