"""The agent's own secrets: read from a file or a systemd credential, never printed."""

from __future__ import annotations

import os
import subprocess

import pytest

from agent.config.load import load
from agent.errors import UsageError

from ..agentrun import REPO, connscope_argv

PASSWORD = "topsecret-d41d8cd9"
SASL = {"CONNSCOPE_AGENT_OUTPUT": "kafka", "CONNSCOPE_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "CONNSCOPE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CONNSCOPE_KAFKA_SASL_MECHANISM": "PLAIN",
        "CONNSCOPE_KAFKA_SASL_USERNAME": "agent"}


def _empty_config(tmp_path) -> str:
    p = tmp_path / "connscope.toml"
    p.write_text("")
    return str(p)


def _secret_file(tmp_path, mode: int, text: str = PASSWORD + "\n"):
    p = tmp_path / "kafka.password"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_password_file_is_read_and_its_newline_dropped(tmp_path):
    p = _secret_file(tmp_path, 0o600)
    cfg = load(_empty_config(tmp_path), env={**SASL, "CONNSCOPE_KAFKA_SASL_PASSWORD_FILE": str(p)})
    assert cfg.kafka.sasl_password == PASSWORD


def test_a_world_readable_password_file_is_refused_in_one_line(tmp_path):
    p = _secret_file(tmp_path, 0o644)
    with pytest.raises(UsageError) as err:
        load(_empty_config(tmp_path), env={**SASL, "CONNSCOPE_KAFKA_SASL_PASSWORD_FILE": str(p)})
    assert err.value.one_line() == f"connscope: kafka.sasl_password_file: {p} is world-readable (fix: chmod o-r {p})"


def test_an_unreadable_password_file_names_the_file(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(UsageError) as err:
        load(_empty_config(tmp_path), env={**SASL, "CONNSCOPE_KAFKA_SASL_PASSWORD_FILE": str(missing)})
    assert str(missing) in err.value.one_line() and "No such file" in err.value.one_line()


def test_the_systemd_credential_is_used_when_nothing_else_is_set(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "kafka_sasl_password").write_text(PASSWORD)
    os.chmod(creds / "kafka_sasl_password", 0o400)
    cfg = load(_empty_config(tmp_path), env={**SASL, "CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.kafka.sasl_password == PASSWORD


def test_print_config_masks_the_password(tmp_path):
    cp = subprocess.run(connscope_argv("run", "--print-config", "--kafka-sasl-password", PASSWORD),
                        capture_output=True, text=True, cwd=REPO, timeout=60,
                        env={**os.environ, **SASL, "CONNSCOPE_CONFIG": _empty_config(tmp_path)})
    assert cp.returncode == 0, cp.stderr
    assert PASSWORD not in cp.stdout + cp.stderr
    assert '"sasl_password": "********"' in cp.stdout
