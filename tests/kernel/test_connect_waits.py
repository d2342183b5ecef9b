"""How long failed connects waited: an application's own connect timeout is
diagnosed as a timeout with the time waited, and a connect left to the
kernel's SYN retries is diagnosed `slow_connect_failure`."""

import json
import subprocess
import sys

import pytest

from netlab import pick_port

from ..agentrun import AgentRun, is_root
from .conftest import Lab

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")

WINDOW = 2.0
SLOW_S = 3.0  # the slow_connect_failure threshold for this test (default 10 s)


@pytest.fixture(scope="module")
def waits():
    run = AgentRun("--summary", "--window", str(WINDOW), "--threshold", f"slow_connect_failure_s={SLOW_S}")
    try:
        yield run
        run.stop()
    finally:
        run.close()


def _raised(run, pid, kind, timeout):
    [d] = run.wait_for(lambda r: r["type"] == "diagnosis" and r["pid"] == pid and r["kind"] == kind
                       and r["state"] == "raised", timeout=timeout)
    return d


def _kinds(run, pid):
    return sorted({r["kind"] for r in run.records() if r["type"] == "diagnosis" and r["pid"] == pid})


def test_kernel_syn_retries_are_a_slow_failure_and_an_own_timeout_is_a_timeout(waits, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.nft_server(f"tcp dport {port} drop")
    ns = lab.pair.client_ns
    default = lab.pair.run(ns, ["sysctl", "-n", "net.ipv4.tcp_syn_retries"]).stdout.strip()
    # 2 retries give a budget of about 7 s; how many SYNs go out in it depends on
    # the kernel (tcp_syn_linear_timeouts): its own count is the ground truth
    lab.pair.sysctl(ns, "net.ipv4.tcp_syn_retries", "2")
    try:
        before = lab.netstat(ns, "TCPSynRetrans")
        [slow] = lab.client(port, "--timeout", 30, comm="cs-slow")
        slow_syns = lab.netstat(ns, "TCPSynRetrans") - before
        [own] = lab.client(port, "--timeout", 1.5, comm="cs-own")
        own_syns = lab.netstat(ns, "TCPSynRetrans") - before - slow_syns
    finally:
        lab.pair.sysctl(ns, "net.ipv4.tcp_syn_retries", default)
    assert slow["error"] == "ETIMEDOUT" and slow["latency_us"] > SLOW_S * 1e6
    assert own["gave_up"] and own["latency_us"] < SLOW_S * 1e6

    # left to the kernel: slow, and a timeout
    d = _raised(waits, slow["pid"], "slow_connect_failure", 3 * WINDOW + 5)
    assert (d["daddr"], d["dport"], d["comm"]) == (lab.server_addr, port, "cs-slow")
    assert abs(d["evidence"]["waited_us"] - slow["latency_us"]) < 200_000  # the kernel's start and failure
    assert d["evidence"]["failures"] == {"ETIMEDOUT": 1}
    t = _raised(waits, slow["pid"], "connect_timeout", 3 * WINDOW + 5)
    assert t["evidence"]["failures"] == {"ETIMEDOUT": 1} and t["evidence"]["syn_retransmits"] == slow_syns >= 2

    # abandoned by the application after 1.5 s: a timeout, named with the time waited; not slow
    t = _raised(waits, own["pid"], "connect_timeout", 3 * WINDOW + 5)
    assert (t["daddr"], t["dport"], t["comm"]) == (lab.server_addr, port, "cs-own")
    assert t["evidence"]["failures"] == {"ABORTED": 1} and t["evidence"]["abandoned_by_application"] == 1
    assert t["evidence"]["syn_retransmits"] == own_syns == 1  # the one at 1 s
    assert abs(t["evidence"]["waited_us"] - own["latency_us"]) < 200_000
    summaries = [r for r in waits.records() if r["type"] == "summary" and r["pid"] == own["pid"]]
    assert max(r["connect_failure_wait_max_us"] or 0 for r in summaries) == t["evidence"]["waited_us"]
    assert _kinds(waits, own["pid"]) == ["connect_timeout"]


_STALLED_WRITER = r"""
import json, os, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print(json.dumps({"pid": os.getpid(), "sport": s.getsockname()[1]}), flush=True)
sys.stdin.readline()  # the test drops our packets now
s.sendall(b"x" * 1000)
try:
    s.recv(1)  # returns the error once the retransmissions time out
    err = 0
except OSError as e:
    err = e.errno
print(json.dumps({"errno": err}), flush=True)
"""


def test_a_timeout_after_establishment_is_counted_and_diagnosed(waits, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, mode="hold", comm="cs-hold")
    ns = lab.pair.client_ns
    default = lab.pair.run(ns, ["sysctl", "-n", "net.ipv4.tcp_retries2"]).stdout.strip()
    lab.pair.sysctl(ns, "net.ipv4.tcp_retries2", "3")  # a few seconds of retransmissions, not 15 minutes
    try:
        writer = lab.pair.popen(ns, [sys.executable, "-c", _STALLED_WRITER, lab.server_addr, str(port)],
                                stdin=subprocess.PIPE)
        hello = json.loads(writer.stdout.readline())
        lab.nft_server(f"tcp dport {port} drop")
        writer.stdin.write(b"go\n")
        writer.stdin.flush()
        done = json.loads(writer.stdout.readline())
        writer.wait(30)
    finally:
        lab.pair.sysctl(ns, "net.ipv4.tcp_retries2", default)
    assert done["errno"] == 110  # ETIMEDOUT, on an established connection

    d = _raised(waits, hello["pid"], "established_timeout", 3 * WINDOW + 5)
    assert (d["daddr"], d["dport"]) == (lab.server_addr, port)
    assert d["evidence"]["close_errors"] == {"ETIMEDOUT": 1} and d["evidence"]["retransmits"] >= 3
    summaries = [r for r in waits.records() if r["type"] == "summary" and r["pid"] == hello["pid"]]
    assert sum(r["close_errors"].get("ETIMEDOUT", 0) for r in summaries) == 1
    assert sum(r["connects_failed"] for r in summaries) == 0  # a connect that succeeded: not a failed attempt
