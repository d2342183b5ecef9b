"""The installed unit under a real systemd: READY after attach, STATUS, watchdog
pings (and a restart when the loop stops), reload, a clean stop, and every
sandbox directive in force while the agent records a connection."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ..schema import assert_valid
from .container import Container
from .unitfile import cap_mask, is_root, unit_caps

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not is_root(), reason="needs root (containers, eBPF)"),
    pytest.mark.timeout(600),  # the container boot alone may take minutes on a loaded machine
]

PYTHON = "/usr/bin/python3"
PORT = 48222  # free: the container has a network namespace of its own
CLIENT = (f"import os, socket; s = socket.socket(); s.bind(('127.0.0.1', {PORT})); s.listen(); "
          "c = socket.create_connection(s.getsockname()); a, _ = s.accept(); "
          "print(os.getpid(), c.getsockname()[1], s.getsockname()[1]); c.close(); a.close()")
WATCHDOG_S = 3  # the unit says 30 s; short here to watch pings and a restart happen


@pytest.fixture
def container(installed_root):
    if shutil.which("systemd-nspawn") is None:
        pytest.fail("systemd-nspawn is missing: apt-get install systemd-container (scripts/setup.sh installs it)")
    c = Container(installed_root)
    try:
        yield c
    finally:
        c.close()


def _records(c: Container) -> list[dict]:
    out = c.run("journalctl", "--unit=connscope", "--output=cat", "--no-pager").stdout
    recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in recs:
        assert_valid(r)
    return recs


def _wait(what, fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_the_installed_unit_runs_the_agent_under_systemd(installed_root, container):
    c = container
    unit = installed_root / "etc/systemd/system/connscope.service"
    c.run("mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing")  # nspawn's /sys has none
    c.run("cp", unit, "/etc/systemd/system/connscope.service")
    c.run("systemd-sysusers", installed_root / "usr/lib/sysusers.d/connscope.conf")
    c.run("chgrp", "connscope", installed_root / "etc/connscope/connscope.toml")  # the container's gid
    # the host's other traffic stays out of the journal (a filter from the environment)
    c.write("/etc/systemd/system/connscope.service.d/test.conf",
            f"[Service]\nWatchdogSec={WATCHDOG_S}s\nLimitCORE=0\nEnvironment=CONNSCOPE_FILTERS_PORTS={PORT}\n")
    c.run("systemctl", "daemon-reload")

    # Type=notify: `systemctl start` returns once READY=1 arrived, after attach
    c.run("systemctl", "start", "connscope", timeout=150)
    props = c.show("connscope", "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
    assert (props["ActiveState"], props["SubState"], props["NRestarts"]) == ("active", "running", "0")
    assert props["StatusText"].startswith("tracing")
    pid = props["MainPID"]
    status = dict(line.split(":\t", 1) for line in c.run("cat", f"/proc/{pid}/status").stdout.splitlines()
                  if ":\t" in line)
    uid = c.run("id", "-u", "connscope").stdout.strip()
    assert status["Uid"].split() == [uid] * 4
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == cap_mask(unit_caps(unit))
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")

    # a connection in the container's network namespace, made by a host process
    out = subprocess.run(c.netns_argv(PYTHON, "-c", CLIENT), capture_output=True, text=True, timeout=30)
    client_pid, sport, port = map(int, out.stdout.split())
    assert port == PORT
    connect, = _wait("the connect record", lambda: [
        r for r in _records(c) if r["type"] == "connect" and (r["sport"], r["dport"]) == (sport, port)])
    assert (connect["pid"], connect["result"], connect["daddr"]) == (client_pid, "ok", "127.0.0.1")

    # WATCHDOG=1 keeps coming from the main loop
    first = int(c.show("connscope", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
    _wait("a later watchdog ping", lambda: int(
        c.show("connscope", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]) > first, WATCHDOG_S)

    # SIGHUP through ExecReload: the same process carries on
    c.run("systemctl", "reload", "connscope")
    after = c.show("connscope", "ActiveState", "MainPID", "NRestarts")
    assert (after["ActiveState"], after["MainPID"], after["NRestarts"]) == ("active", pid, "0")

    # a loop that stops pinging is killed and restarted by systemd
    c.run("kill", "-STOP", pid)
    _wait("the watchdog restart", lambda: c.show("connscope", "NRestarts")["NRestarts"] == "1", 60)
    journal = c.run("journalctl", "--unit=connscope", "--output=cat", "--no-pager").stdout
    assert f"connscope.service: Watchdog timeout (limit {WATCHDOG_S}s)!" in journal
    _wait("the restarted agent", lambda: c.show("connscope", "ActiveState")["ActiveState"] == "active", 120)
    assert c.show("connscope", "MainPID")["MainPID"] != pid

    # SIGTERM: the agent stops cleanly and says so
    c.run("systemctl", "stop", "connscope", timeout=60)
    end = c.show("connscope", "Result", "ExecMainStatus", "ActiveState")
    assert (end["ActiveState"], end["Result"], end["ExecMainStatus"]) == ("inactive", "success", "0")
    assert [r["event"] for r in _records(c) if r["type"] == "agent" and r["event"] in ("start", "stop")][-2:] == \
        ["start", "stop"]

    # The Kafka password as a systemd credential (systemd/dropins/kafka-sasl-credential.conf):
    # the unit shows it, and the agent, run as systemd runs it with that
    # credential and nothing else, has a password it never prints.
    secret = "cred-5f2a9c1e7b"
    dropin = REPO / "systemd/dropins/kafka-sasl-credential.conf"
    c.write("/etc/systemd/system/connscope.service.d/kafka-sasl-credential.conf", dropin.read_text())
    c.write("/etc/connscope/kafka_sasl_password", secret + "\n")
    c.run("chmod", "0600", "/etc/connscope/kafka_sasl_password")
    c.run("systemctl", "daemon-reload")
    [cred] = [ln.split("=", 1)[1] for ln in open(dropin) if ln.startswith("LoadCredential=")]
    # (systemd 252's `show` prints this property as [unprintable])
    assert f"LoadCredential={cred.strip()}" in c.run("systemctl", "cat", "connscope").stdout
    exe = next(ln.split("=", 1)[1].split()[0] for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))
    env = [f"-E{k}={v}" for k, v in (("CONNSCOPE_AGENT_OUTPUT", "kafka"), ("CONNSCOPE_KAFKA_BOOTSTRAP", "127.0.0.1:9"),
                                     ("CONNSCOPE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                                     ("CONNSCOPE_KAFKA_SASL_MECHANISM", "PLAIN"),
                                     ("CONNSCOPE_KAFKA_SASL_USERNAME", "agent"))]
    shown = c.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", f"LoadCredential={cred.strip()}",
                  "-p", "User=connscope", *env, exe, "run", "--config", "/dev/null", "--print-config", timeout=120)
    assert json.loads(shown.stdout)["kafka"]["sasl_password"] == "********"
    assert secret not in shown.stdout + shown.stderr
