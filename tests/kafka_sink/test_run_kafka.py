"""`connscope run --output kafka` end to end: real connections, the real agent, a Kafka broker.

The mock cluster runs in this test process (librdkafka through ctypes); the
agent is a separate process that reaches it over loopback.
"""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from netlab import pick_port
from schema import assert_valid

from ..agentrun import REPO, connscope_argv, is_root
from ..kernel.conftest import Lab
from .conftest import consume_all

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")

TOPIC, PARTITIONS = "connscope-e2e", 4


def agent(tmp_path, bootstrap, *extra):
    err = open(tmp_path / "stderr.txt", "ab")
    proc = subprocess.Popen(connscope_argv(
        "run", "--output", "kafka", "--kafka-bootstrap", bootstrap, "--kafka-topic", TOPIC,
        "--kafka-api-version", "2.3", "--kafka-linger-ms", "5", "--kafka-flush-timeout-s", "5",
        "--state-dir", str(tmp_path / "state"), "--status-interval", "0", *extra),
        stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
    err.close()
    return proc


def stop(proc, timeout=30):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout) == 0


def records(cluster):
    out = []
    for m in consume_all(cluster.bootstrap, TOPIC, PARTITIONS):
        rec = json.loads(m.value)
        assert_valid(rec)
        out.append(rec)
    return out


def wait_record(cluster, pred, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in records(cluster) if pred(r)]
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("record not delivered")


def by_run(recs):
    runs = {}
    for r in recs:
        runs.setdefault(r["run_id"], []).append(r)
    return runs


def test_real_connections_reach_kafka_in_order(tmp_path, mock_cluster, netpair, peer_cmd):
    mock_cluster.create_topic(TOPIC, PARTITIONS)
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    # --port keeps other traffic on this host out of the one partition the host key fills
    proc = agent(tmp_path, mock_cluster.bootstrap, "--port", str(port))
    try:
        wait_record(mock_cluster, lambda r: r["type"] == "agent" and r["event"] == "start")
        [attempt] = lab.client(port)
        wait_record(mock_cluster, lambda r: r["type"] == "connect" and r["dport"] == port)
        stop(proc)
    finally:
        proc.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert f"1 broker reachable at {mock_cluster.bootstrap}" in stderr, stderr
    [run] = by_run(records(mock_cluster)).values()
    # one host key: one partition, in seq order; at-least-once may repeat a record, never lose one
    assert len({(r["host"]) for r in run}) == 1
    seqs = [r["seq"] for r in run]
    assert sorted(set(seqs)) == list(range(1, max(seqs) + 1)), "a seq is missing"
    assert seqs == sorted(seqs)
    [conn] = [r for r in run if r["type"] == "connect" and r["dport"] == port][:1]
    assert (conn["sport"], conn["errno"], conn["pid"]) == (attempt["sport"], 111, attempt["pid"])
    assert run[-1]["type"] == "agent" and run[-1]["event"] == "stop"


def test_broker_down_at_start_then_the_spool_is_delivered_by_the_next_run(tmp_path, mock_cluster, netpair,
                                                                           peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        down = f"127.0.0.1:{closed.getsockname()[1]}"
    proc = agent(tmp_path, down, "--port", str(port))
    try:
        time.sleep(6)  # attached, and the broker found down
        [attempt] = lab.client(port)
        time.sleep(1.5)
        stop(proc)
    finally:
        proc.kill()
    lines = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert lines and all(line.startswith("connscope: ") for line in lines), lines
    assert any("no broker reachable" in line and down in line and "kafka.bootstrap" in line for line in lines)
    assert os.listdir(tmp_path / "state" / "spool")
    # the next start, with the broker up, sends what the first run spooled
    mock_cluster.create_topic(TOPIC, PARTITIONS)
    proc = agent(tmp_path, mock_cluster.bootstrap, "--port", str(port))
    try:
        first = wait_record(mock_cluster, lambda r: r["type"] == "connect" and r["dport"] == port)[0]
        stop(proc)
    finally:
        proc.kill()
    assert (first["sport"], first["errno"]) == (attempt["sport"], 111)
    runs = by_run(records(mock_cluster))
    assert len(runs) == 2
    spooled = runs[first["run_id"]]
    assert spooled[0]["event"] == "start" and spooled[-1]["event"] == "stop"
    seqs = sorted({r["seq"] for r in spooled})
    assert seqs == list(range(1, len(seqs) + 1)), "the spooled run arrived with a gap"


def test_bad_bootstrap_is_one_line_and_exit_2(tmp_path):
    cp = subprocess.run(connscope_argv("run", "--output", "kafka", "--kafka-bootstrap", "broker-without-port",
                                       "--state-dir", str(tmp_path)),
                        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert cp.returncode == 2, cp.stderr
    [line] = cp.stderr.strip().splitlines()
    assert line.startswith("connscope: kafka.bootstrap = 'broker-without-port'") and "HOST:PORT" in line


def test_sighup_moves_the_stream_to_another_topic_without_loss(tmp_path, mock_cluster, netpair, peer_cmd):
    """Sink settings apply on reload: the sink is closed (what is not acknowledged
    stays in the spool) and a new one opens on the same spool."""
    other = "connscope-e2e-2"
    mock_cluster.create_topic(TOPIC, PARTITIONS)
    mock_cluster.create_topic(other, PARTITIONS)
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    conf = tmp_path / "connscope.toml"
    conf.write_text(f'[kafka]\ntopic = "{TOPIC}"\n')
    err = open(tmp_path / "stderr.txt", "ab")
    proc = subprocess.Popen(connscope_argv(
        "run", "--config", str(conf), "--output", "kafka", "--kafka-bootstrap", mock_cluster.bootstrap,
        "--kafka-api-version", "2.3", "--kafka-linger-ms", "5", "--state-dir", str(tmp_path / "state"),
        "--status-interval", "0", "--port", str(port)),
        stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
    err.close()
    try:
        wait_record(mock_cluster, lambda r: r["type"] == "agent" and r["event"] == "start")
        [before] = lab.client(port)
        wait_record(mock_cluster, lambda r: r["type"] == "connect" and r["sport"] == before["sport"])
        conf.write_text(f'[kafka]\ntopic = "{other}"\n')
        proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        [after] = lab.client(port)
        time.sleep(2)
        stop(proc)
    finally:
        proc.kill()
    first = records(mock_cluster)
    second = [json.loads(m.value) for m in consume_all(mock_cluster.bootstrap, other, PARTITIONS)]
    for rec in second:
        assert_valid(rec)
    [reload] = [r for r in first + second if r["type"] == "agent" and r["event"] == "reload"]
    assert reload["applied"] == ["kafka.topic"] and reload["restart_required"] == []
    assert any(r["type"] == "connect" and r["sport"] == before["sport"] for r in first)
    assert any(r["type"] == "connect" and r["sport"] == after["sport"] for r in second)
    # one run, numbered without a gap across both topics
    seqs = sorted({r["seq"] for r in first + second})
    assert seqs == list(range(1, len(seqs) + 1))
    assert second[-1]["event"] == "stop"
