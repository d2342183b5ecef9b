"""`connscope sockets`: live connections with their owner, queues and options."""

import json
import os
import subprocess

import pytest

from netlab import pick_port, wait_json_line

from ..agentrun import connscope_argv, is_root
from ..conftest import PYTHON, TESTS_DIR
from ..schema import assert_valid
from .conftest import Lab

SOCKSTATE = os.path.join(TESTS_DIR, "tools", "sockstate.py")
UNREAD = 5000  # fits the receive buffer: all of it acknowledged, none of it read

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (network namespaces, other processes' fds)")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_sockets_lists_a_live_connection_with_its_owner_queues_and_options(netpair, peer_cmd, family):
    lab = Lab(netpair, peer_cmd, family)
    port = pick_port()
    pair = lab.pair
    srv = pair.popen(pair.server_ns, [PYTHON, SOCKSTATE, "stall-server", "--addr", lab.server_addr, "--port",
                                      str(port), "--comm", "cs-sksrv"], stdin=subprocess.PIPE)
    spid = wait_json_line(srv, lambda j: j["event"] == "listening", timeout=10)["pid"]
    cli = pair.popen(pair.client_ns, [PYTHON, SOCKSTATE, "stall-client", "--addr", lab.server_addr, "--port",
                                      str(port), "--bytes", str(UNREAD), "--keepidle", "42", "--nodelay",
                                      "--comm", "cs-skcli"], stdin=subprocess.PIPE)
    connected = wait_json_line(cli, lambda j: j["event"] == "connected", timeout=10)
    wait_json_line(cli, lambda j: j["event"] == "sent", timeout=10)
    wait_json_line(srv, lambda j: j["event"] == "accepted", timeout=10)

    def look():
        cp = subprocess.run(connscope_argv("sockets", "--port", str(port)), capture_output=True, text=True,
                            timeout=60)
        assert cp.returncode == 0, cp.stderr
        return [json.loads(line) for line in cp.stdout.splitlines()]

    recs = look()
    for _ in range(50):  # until the peer's ACK of the last bytes is in
        if all(r["send_q"] == 0 for r in recs if r["pid"] == connected["pid"]):
            break
        recs = look()
    for r in recs:
        assert_valid(r)
    [out] = [r for r in recs if r["sport"] == connected["sport"] and r["dport"] == port]
    [inb] = [r for r in recs if r["sport"] == port and r["dport"] == connected["sport"]]
    assert (out["pid"], out["comm"], out["direction"], out["state"]) == (
        connected["pid"], "cs-skcli", "outbound", "ESTABLISHED"), out
    assert (inb["pid"], inb["comm"], inb["direction"], inb["state"]) == (spid, "cs-sksrv", "inbound",
                                                                        "ESTABLISHED"), inb
    assert (out["recv_q"], out["send_q"], inb["recv_q"], inb["send_q"]) == (0, 0, UNREAD, 0)
    assert (out["bytes_acked"], inb["bytes_received"]) == (UNREAD + 1, UNREAD)  # +1: the client's SYN
    assert (out["keepalive"], out["keepalive_idle_s"], out["nodelay"]) == (True, 42, True), out
    assert (inb["keepalive"], inb["keepalive_idle_s"], inb["nodelay"]) == (False, None, False), inb
    assert out["rtt_us"] > 0 and out["mss"] > 0 and out["family"] == family
    cli.stdin.write(b"close\n")
    cli.stdin.flush()
    srv.stdin.write(b"read\n")
    srv.stdin.flush()
    assert wait_json_line(srv, lambda j: j["event"] == "drained", timeout=20)["bytes"] == UNREAD


def test_sockets_refuses_contradicting_families():
    cp = subprocess.run(connscope_argv("sockets", "-4", "-6"), capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2 and "-4 and -6 exclude each other" in cp.stderr
