"""Kernel-tier fixtures: a running agent and the peers that make real traffic."""

import os
import shlex
import subprocess
import threading

import pytest

from netlab import json_lines, wait_json_line

from ..agentrun import AgentRun, is_root
from ..conftest import PYTHON, TESTS_DIR

SOCKSTATE = os.path.join(TESTS_DIR, "tools", "sockstate.py")

FAMILIES = ["ipv4", "ipv6"]


def _agent_scope(fixture_name, config) -> str:
    # The stock-kernel tier runs these modules in a guest where one compile
    # costs seconds of emulated CPU: one agent serves the whole session there.
    return "session" if os.environ.get("CSTEST_SHARED_AGENT") else "module"


@pytest.fixture(scope=_agent_scope)
def agent():
    """One real agent per test module; tests pick out their own connections by
    namespace addresses and ports, so they do not depend on each other.
    $CSTEST_AGENT_ARGS adds flags (the stock-kernel tier's
    --force-hook runs)."""
    if not is_root():
        pytest.skip("needs root (loads eBPF programs)")
    run = AgentRun(*shlex.split(os.environ.get("CSTEST_AGENT_ARGS", "")))
    try:
        yield run
        run.stop()
    finally:
        run.close()


class Lab:
    """A NetPair with the peer tool, addressed by family."""

    def __init__(self, pair, peer_cmd, family):
        self.pair, self.peer_cmd, self.family = pair, peer_cmd, family
        v6 = family == "ipv6"
        self.client_addr = pair.client_v6 if v6 else pair.client_v4
        self.server_addr = pair.server_v6 if v6 else pair.server_v4
        self.unrouted = pair.unrouted_v6 if v6 else pair.unrouted_v4

    def server(self, port, mode="close", comm="cs-srv", *extra):
        proc = self.pair.popen(self.pair.server_ns, self.peer_cmd(
            "server", "--addr", self.server_addr, "--port", port, "--mode", mode, "--comm", comm, *extra))
        listening = wait_json_line(proc, lambda j: j["event"] == "listening", timeout=10)
        # Nothing reads the server's per-connection lines after this: drain
        # them, or a full pipe blocks the server after a few thousand accepts.
        threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
        return proc, listening

    def client(self, port, *extra, addr=None, comm="cs-cli", timeout=60):
        cp = self.pair.run(self.pair.client_ns, self.peer_cmd(
            "client", "--addr", addr or self.server_addr, "--port", port, "--comm", comm, *extra), timeout=timeout)
        return [j for j in json_lines(cp.stdout) if j["event"] == "connect"]

    def stalled_pair(self, port, server_comm="cs-stallsrv", client_comm="cs-stallcli", nbytes=16 << 20):
        """tools/sockstate.py's stall-server (reads nothing until a line on stdin)
        and stall-client (sends nbytes): the server's Recv-Q and the client's
        Send-Q fill. Returns (server, its pid, client, its pid)."""
        pair = self.pair
        srv = pair.popen(pair.server_ns, [PYTHON, SOCKSTATE, "stall-server", "--addr", self.server_addr, "--port",
                                          str(port), "--comm", server_comm], stdin=subprocess.PIPE)
        spid = wait_json_line(srv, lambda j: j["event"] == "listening", timeout=10)["pid"]
        cli = pair.popen(pair.client_ns, [PYTHON, SOCKSTATE, "stall-client", "--addr", self.server_addr, "--port",
                                          str(port), "--bytes", str(nbytes), "--comm", client_comm],
                         stdin=subprocess.PIPE)
        cpid = wait_json_line(cli, lambda j: j["event"] == "connected", timeout=10)["pid"]
        return srv, spid, cli, cpid

    def netstat(self, ns, name):
        """A TcpExt counter of one namespace (/proc/net/netstat is per netns)."""
        text = self.pair.run(ns, ["cat", "/proc/net/netstat"]).stdout.splitlines()
        for head, vals in zip(text[::2], text[1::2]):
            if head.startswith("TcpExt:"):
                return int(dict(zip(head.split()[1:], vals.split()[1:]))[name])
        raise KeyError(name)

    def nft_server(self, rule):
        fam = "ip6" if self.family == "ipv6" else "ip"
        self.pair.nft(self.pair.server_ns, f"""
            table inet cstest {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    meta nfproto {'ipv6' if fam == 'ip6' else 'ipv4'} {rule}
                }}
            }}""")


@pytest.fixture(params=FAMILIES)
def lab(request, netpair, peer_cmd):
    return Lab(netpair, peer_cmd, request.param)


def _drain(stream):
    try:
        while stream.read(65536):
            pass
    except (OSError, ValueError):
        pass


def match(**fields):
    return lambda r: all(r.get(k) == v for k, v in fields.items())
