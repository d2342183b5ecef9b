"""While Kafka cannot take records, the agent says so where operators look.

The journal (stderr) gets a line every kafka.trouble_report_s with how long
delivery has failed, the spool's fill and the last error; `systemctl status`
(the STATUS= line on the notify socket) says the same; recovery and the end
of the replay get a line each; a stop during an outage puts the stop record
on stderr too. Switching output away from Kafka leaves no record behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pytest

from netlab import wait_until

from ..agentrun import REPO, connscope_argv, is_root
from ..e2e.test_run import NotifySocket
from .test_run_kafka import PARTITIONS, TOPIC, by_run, records

pytestmark = [pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)"), pytest.mark.timeout(300)]


def _agent(tmp_path, bootstrap, *extra, env=None):
    err = open(tmp_path / "stderr.txt", "ab")
    proc = subprocess.Popen(connscope_argv(
        "run", "--output", "kafka", "--kafka-bootstrap", bootstrap, "--kafka-topic", TOPIC,
        "--kafka-api-version", "2.3", "--kafka-linger-ms", "5", "--kafka-flush-timeout-s", "3",
        "--kafka-request-timeout-ms", "2000", "--kafka-delivery-timeout-ms", "4000",
        "--kafka-trouble-report-s", "1", "--state-dir", str(tmp_path / "state"), *extra),
        stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env={**os.environ, **(env or {})})
    err.close()
    return proc


def _stderr(tmp_path) -> list[str]:
    return (tmp_path / "stderr.txt").read_text().splitlines()


def _wait(what, fn, timeout=60.0):
    return wait_until(fn, timeout, what, 0.2)


def _refused(n: int) -> None:
    """n connects to a loopback port nothing listens on: records the agent always sends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for _ in range(n):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
        except OSError:
            pass


def test_an_outage_is_reported_periodically_then_its_recovery(tmp_path, mock_cluster):
    mock_cluster.create_topic(TOPIC, PARTITIONS)
    note = NotifySocket(tmp_path / "notify")
    proc = _agent(tmp_path, mock_cluster.bootstrap, "--status-interval", "1", env={"NOTIFY_SOCKET": note.path})
    try:
        _wait("delivery", lambda: any(r["type"] == "agent" and r["event"] == "start" for r in records(mock_cluster)))
        mock_cluster.broker_down(1)
        _refused(20)
        failing = _wait("two periodic lines", lambda: [l for l in _stderr(tmp_path) if "delivery failing for" in l]
                        if sum("delivery failing for" in l for l in _stderr(tmp_path)) >= 2 else None)
        assert all(l.startswith("connscope: kafka: delivery failing for ") and "%) in " in l
                   and "last error: " in l and "(fix: " in l for l in failing), failing
        note.wait(lambda m: any(x.startswith("STATUS=kafka: delivery failing for") for x in m), timeout=30)
        _refused(20)
        mock_cluster.broker_up(1)
        _wait("the recovery line", lambda: any("delivering again after" in l for l in _stderr(tmp_path)))
        _wait("the end of the replay", lambda: any("replay done:" in l for l in _stderr(tmp_path)))
        note.wait(lambda m: "STATUS=tracing; delivery works again" in m, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        note.close()
    [run] = by_run(records(mock_cluster)).values()
    seqs = sorted({r["seq"] for r in run})
    assert seqs == list(range(1, max(seqs) + 1)), "a record spooled during the outage is missing"
    assert any(r["type"] == "agent" and r["event"] == "stop" for r in run)
    assert not any("The stop record" in l for l in _stderr(tmp_path))  # it was delivered


def test_a_stop_during_an_outage_puts_the_stop_record_on_stderr(tmp_path, mock_cluster):
    mock_cluster.create_topic(TOPIC, PARTITIONS)
    proc = _agent(tmp_path, mock_cluster.bootstrap)
    try:
        _wait("delivery", lambda: any(r["type"] == "agent" and r["event"] == "start" for r in records(mock_cluster)))
        mock_cluster.broker_down(1)
        _refused(5)
        _wait("the failure", lambda: any("delivery failing for" in l for l in _stderr(tmp_path)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    [line] = [l for l in _stderr(tmp_path) if "The stop record: " in l]
    stop = json.loads(line.split("The stop record: ", 1)[1])
    assert (stop["type"], stop["event"]) == ("agent", "stop")
    # nothing is lost: the next run, with the broker back, sends the same stop record from the spool
    mock_cluster.broker_up(1)
    proc = _agent(tmp_path, mock_cluster.bootstrap)
    try:
        _wait("the spooled stop record", lambda: any(r["run_id"] == stop["run_id"] and r.get("event") == "stop"
                                                     for r in records(mock_cluster)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _config(path, output: str, bootstrap: str, state) -> None:
    path.write_text(f'[agent]\noutput = "{output}"\nstate_dir = "{state}"\nstatus_interval = 0\n'
                    f'[kafka]\nbootstrap = ["{bootstrap}"]\ntopic = "{TOPIC}"\napi_version = "2.3"\n'
                    f'flush_timeout_s = 2\nrequest_timeout_ms = 2000\ndelivery_timeout_ms = 4000\n')


def test_switching_output_away_from_kafka_leaves_no_record_behind(tmp_path, mock_cluster):
    mock_cluster.create_topic(TOPIC, PARTITIONS)
    mock_cluster.broker_down(1)
    conf, state = tmp_path / "connscope.toml", tmp_path / "state"
    _config(conf, "kafka", mock_cluster.bootstrap, state)
    out = open(tmp_path / "stdout.jsonl", "wb")
    err = open(tmp_path / "stderr.txt", "ab")
    proc = subprocess.Popen(connscope_argv("run", "--config", str(conf)), stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        _wait("the failure", lambda: any("no broker" in l or "delivery failing" in l for l in _stderr(tmp_path)))
        _refused(10)
        _config(conf, "stdout", mock_cluster.bootstrap, state)
        proc.send_signal(signal.SIGHUP)
        [switched] = _wait("the switch line", lambda: [l for l in _stderr(tmp_path) if "output switched" in l])
        assert switched.startswith("connscope: output switched from kafka to stdout: ") and " records (" in switched
        assert f"wait in the Kafka spool {state}/spool" in switched
        _wait("the reload record on stdout", lambda: b'"event":"reload"' in (tmp_path / "stdout.jsonl").read_bytes())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        out.close()
        err.close()
    waiting = int(switched.split("stdout: ")[1].split(" records")[0])
    assert waiting > 0
    check = subprocess.run(connscope_argv("check", "--config", str(conf)), capture_output=True, text=True,
                           cwd=REPO, timeout=120)
    assert f"SPOOL              kafka          waiting  {waiting} records" in check.stdout, check.stdout
    # the next Kafka run delivers them: with stdout's records, the first run has every seq
    mock_cluster.broker_up(1)
    _config(conf, "kafka", mock_cluster.bootstrap, state)
    proc = subprocess.Popen(connscope_argv("run", "--config", str(conf)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        on_stdout = [json.loads(l) for l in (tmp_path / "stdout.jsonl").read_text().splitlines()]
        first_run = on_stdout[0]["run_id"]

        def complete():
            seqs = {r["seq"] for r in records(mock_cluster) if r["run_id"] == first_run}
            seqs |= {r["seq"] for r in on_stdout}
            return seqs == set(range(1, max(seqs) + 1)) and len(seqs) >= waiting + len(on_stdout)
        _wait("every spooled record in Kafka", complete)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
