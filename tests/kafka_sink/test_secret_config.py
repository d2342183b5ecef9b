"""The Kafka SASL password leaves no trace: not in records, not on stderr, not in logs.

The agent reads it from a file, fails to authenticate against a real broker
(the mock cluster speaks no SASL), reloads a new one on SIGHUP, and stops;
its stderr and every record it spooled are searched for both passwords.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ..agentrun import is_root
from .test_run_kafka import agent

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")

FIRST, SECOND = "pw-first-8c1e0f3a", "pw-second-52b7d9e4"


def _spooled(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (state / "spool").rglob("*") if p.is_file())


def _wait(what, fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_password_from_a_file_is_in_no_record_no_stderr_and_no_log(tmp_path, mock_cluster, monkeypatch):
    pw = tmp_path / "kafka.password"
    pw.write_text(FIRST + "\n")
    os.chmod(pw, 0o600)
    monkeypatch.setenv("CONNSCOPE_KAFKA_SASL_PASSWORD_FILE", str(pw))
    proc = agent(tmp_path, mock_cluster.bootstrap, "--kafka-security-protocol", "SASL_PLAINTEXT",
                 "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "agent", "--status-interval", "1")
    try:
        stderr = tmp_path / "stderr.txt"
        # the sink says it cannot deliver (kafka-python's authentication error is its cause)
        _wait("the sink's warning", lambda: b"connscope" in stderr.read_bytes())
        _wait("records in the spool", lambda: b'"event":"start"' in _spooled(tmp_path / "state"))
        pw.write_text(SECOND + "\n")
        proc.send_signal(signal.SIGHUP)
        _wait("the reload record", lambda: b'"event":"reload"' in _spooled(tmp_path / "state"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    seen = stderr.read_bytes() + _spooled(tmp_path / "state")
    assert b'"applied":["kafka.sasl_password"]' in _spooled(tmp_path / "state")
    for secret in (FIRST, SECOND):
        assert secret.encode() not in seen, secret
