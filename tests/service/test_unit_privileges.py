"""The agent run the way the unit runs it: an unprivileged user holding exactly
the unit's AmbientCapabilities (setpriv), and what breaks without each one."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from agent.kernel import privileges

from ..schema import assert_valid
from .unitfile import AGENT_CMD, cap_mask, is_root, port_filter, setpriv_argv, status_fields, unit_caps

pytestmark = [
    pytest.mark.skipif(not is_root(), reason="needs root (useradd, eBPF)"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]


class UserAgent:
    """The agent under setpriv; records are read from its stdout file and validated."""

    def __init__(self, user, caps, tmp_path, *args):
        self.out_path, self.err_path = tmp_path / "records.jsonl", tmp_path / "stderr.txt"
        self._pos, self._recs = 0, []
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([*setpriv_argv(user.name, caps), *AGENT_CMD, *args], stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL, cwd="/")

    def records(self) -> list[dict]:
        with open(self.out_path, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        self._pos += len(data)
        for line in data.splitlines():
            r = json.loads(line)
            assert_valid(r)
            assert r["seq"] == len(self._recs) + 1
            self._recs.append(r)
        return self._recs

    def wait_for(self, predicate, count=1, timeout=15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records() if predicate(r)]
            if len(found) >= count:
                return found
            assert self.proc.poll() is None, f"agent exited {self.proc.returncode}: {self.err_path.read_text()}"
            assert time.monotonic() < deadline, f"{len(found)}/{count} records after {timeout}s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("dropped,accept_owner", [(None, "listener"), ("CAP_SYS_PTRACE", "unknown")],
                         ids=["unit-caps", "without-CAP_SYS_PTRACE"])
def test_unit_capabilities_attach_and_record_a_loopback_connection(temp_user, tmp_path, dropped, accept_owner):
    """With the unit's capabilities the agent attaches and records the connection with
    its owners. CAP_SYS_PTRACE is what lets it name the owner of a listener older
    than itself (root's, here): without it that accept has no owner."""
    caps = [c for c in unit_caps() if c != dropped]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)  # before the agent starts: only its /proc scan can find the owner
    port = srv.getsockname()[1]
    agent = UserAgent(temp_user, caps, tmp_path, *port_filter(port))  # other tests' traffic stays out
    try:
        start = agent.wait_for(lambda r: r["type"] == "agent" and r["event"] == "start", timeout=90)[0]
        st = status_fields(agent.proc.pid)
        assert st["Uid"].split() == [str(temp_user.uid)] * 4
        assert int(st["CapEff"], 16) == cap_mask(caps) and int(st["CapBnd"], 16) == cap_mask(caps)
        assert st["NoNewPrivs"] == "1"
        assert all(h["state"] == "active" for name, h in start["hooks"].items() if h["required"])

        cli = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        sport = cli.getsockname()[1]
        cli.close()
        conn.close()
        me, comm = os.getpid(), open("/proc/self/comm").read().strip()

        def mine(r):
            return {r.get("sport"), r.get("dport")} == {port, sport}

        connect, = agent.wait_for(lambda r: r["type"] == "connect" and mine(r))
        accept, = agent.wait_for(lambda r: r["type"] == "accept" and mine(r))
        agent.wait_for(lambda r: r["type"] == "close" and mine(r), count=2)
        assert (connect["pid"], connect["comm"], connect["pid_source"]) == (me, comm, "connect")
        assert (connect["sport"], connect["dport"], connect["result"]) == (sport, port, "ok")
        assert (accept["sport"], accept["dport"], accept["pid_source"]) == (port, sport, accept_owner)
        assert accept["pid"] == (me if accept_owner == "listener" else 0)
    finally:
        agent.stop()
        srv.close()
    assert agent.proc.returncode == 0, agent.err_path.read_text()


@pytest.mark.parametrize("missing", sorted(name for name, _ in privileges.NEEDED.values()))
def test_without_a_needed_capability_one_line_names_it_and_the_fix(temp_user, missing):
    caps = [c for c in unit_caps() if c != missing]
    cp = subprocess.run([*setpriv_argv(temp_user.name, caps), *AGENT_CMD, "--duration", "1"],
                        capture_output=True, text=True, timeout=60, cwd="/")
    why = {name: why for name, why in privileges.NEEDED.values()}[missing]
    assert cp.returncode == 1
    assert cp.stdout == ""
    assert cp.stderr == (
        f"connscope: running as uid {temp_user.uid} without {missing} ({why}): cannot load eBPF programs "
        "(fix: run as root (sudo), or grant CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH as systemd/connscope.service "
        "does with AmbientCapabilities=)\n")
