"""The test lab itself (tests/netlab.py + tests/tools/peer.py) against the real kernel.

Every fault the tracer's tests rely on is checked here with the errno it gives
on this kernel, so a tracer test that fails is not a lab that silently changed.

Measured on 6.18 (veth pair between two namespaces, nft in the server ns):
  fault                                      IPv4              IPv6
  no listener                                111 ECONNREFUSED  111
  reject with tcp reset                      111               111
  drop + TCP_SYNCNT=1                        110 ETIMEDOUT ~3s 110 ~3s
  reject icmp host-unreachable / admin-proh. 113 EHOSTUNREACH  -
  reject icmp net-unreachable                101 ENETUNREACH   -
  reject icmp port-unreachable               111 ECONNREFUSED  -
  reject icmpv6 addr-unreachable             -                 113 EHOSTUNREACH
  reject icmpv6 admin-prohibited             -                 13 EACCES (not 113: icmpv6_err_convert)
  reject icmpv6 no-route                     -                 101 ENETUNREACH
  reject icmpv6 port-unreachable             -                 111 ECONNREFUSED
  unrouted destination (no packet sent)      101               101
  peer SO_LINGER 0 close after our data      recv 104 ECONNRESET 104
  11th connect, 10-port range, TIME_WAITs    99 EADDRNOTAVAIL  99 (the ipv4 sysctl governs v6 too;
                                             needs tcp_rfc1337=1 to be deterministic, see the test)
An ICMP error usually lands while connect() still holds the socket lock, so it
is only a soft error and the attempt fails at the first SYN retransmit (~1 s);
when the softirq runs outside the lock it fails at once. Assert errno, not time.
"""

import errno
import os
import subprocess
import time

import pytest

from netlab import MARKER_DIR, NetPair, json_lines, list_netns, pick_port, sweep_stale, wait_json_line

pytestmark = pytest.mark.kernel

FAMILIES = ["v4", "v6"]


def server_addr(lab, fam):
    return getattr(lab, f"server_{fam}")


def start_server(lab, peer_cmd, fam, port, *extra, comm="cs-srv"):
    proc = lab.popen(lab.server_ns, peer_cmd("server", "--addr", server_addr(lab, fam), "--port", port,
                                             "--comm", comm, *extra))
    line = wait_json_line(proc, lambda o: o["event"] == "listening", 10)
    assert line["pid"] == proc.pid  # `ip netns exec` execs, it does not fork
    return proc


def client(lab, peer_cmd, addr, port, *extra, timeout=30):
    cp = lab.run(lab.client_ns, peer_cmd("client", "--addr", addr, "--port", port, *extra), timeout=timeout)
    return json_lines(cp.stdout)


def nft_input_rule(lab, table_family, rule):
    lab.nft(lab.server_ns, f"""
table {table_family} cslab {{
    chain input {{
        type filter hook input priority 0; policy accept;
        {rule}
    }}
}}
""")


def ss(lab, ns, *args):
    return lab.run(ns, ["ss", "-Htan", *args]).stdout.splitlines()


# -- the lab's shape -------------------------------------------------------

def test_pair_layout(netpair):
    lab = netpair
    assert lab.client_ns != lab.server_ns and {lab.client_ns, lab.server_ns} <= set(list_netns())
    n = int(lab.client_v4.split(".")[2])
    assert 1 <= n <= 254
    assert (lab.client_v4, lab.server_v4) == (f"169.254.{n}.1", f"169.254.{n}.2")
    assert (lab.client_v6, lab.server_v6) == (f"fd00:{n}::1", f"fd00:{n}::2")
    assert lab.unrouted_v4.startswith("169.254.") and lab.unrouted_v4.split(".")[2] != str(n)
    assert lab.unrouted_v6.startswith("fd00:") and not lab.unrouted_v6.startswith(f"fd00:{n}:")
    for ns in (lab.client_ns, lab.server_ns):
        assert lab.run(ns, ["ip", "-4", "route", "show", "default"]).stdout.strip() == ""
        assert lab.run(ns, ["ip", "-6", "route", "show", "default"]).stdout.strip() == ""
        assert lab.run(ns, ["ip", "-6", "addr", "show", "tentative"]).stdout.strip() == ""
        assert "UP" in lab.run(ns, ["ip", "-o", "link", "show", "lo"]).stdout
    assert 20000 <= pick_port() <= 29999


# -- success ------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMILIES)
def test_connect_ok_and_comms(netpair, peer_cmd, fam):
    lab, port = netpair, pick_port()
    srv = start_server(lab, peer_cmd, fam, port, "--count", "1")
    with open(f"/proc/{srv.pid}/comm") as f:
        assert f.read().strip() == "cs-srv"

    cli = lab.popen(lab.client_ns, peer_cmd("client", "--addr", server_addr(lab, fam), "--port", port,
                                            "--comm", "cs-cli", "--hold", "1.5", "--close-first"))
    acc = wait_json_line(srv, lambda o: o["event"] == "accepted", 10)
    # The client is holding its connected socket now.
    with open(f"/proc/{cli.pid}/comm") as f:
        assert f.read().strip() == "cs-cli"
    owners = [line for line in lab.run(lab.client_ns, ["ss", "-Htnp", "state", "established"]).stdout.splitlines()]
    assert len(owners) == 1 and f'("cs-cli",pid={cli.pid},' in owners[0], owners

    line = wait_json_line(cli, lambda o: o["event"] == "connect", 10)
    assert line["errno"] == 0 and line["error"] is None
    assert line["pid"] == line["tid"] == cli.pid
    assert line["saddr"] == getattr(lab, f"client_{fam}")
    assert (line["daddr"], line["dport"]) == (server_addr(lab, fam), port)
    assert (acc["raddr"], acc["rport"]) == (line["saddr"], line["sport"])
    assert (acc["laddr"], acc["lport"]) == (server_addr(lab, fam), port)
    assert acc["pid"] == srv.pid
    closed = wait_json_line(srv, lambda o: o["event"] == "closed", 10)
    assert closed["rport"] == line["sport"] and closed["how"] == "close"
    assert cli.wait(10) == 0
    assert srv.wait(10) == 0  # --count 1: exits once its one connection is done


@pytest.mark.parametrize("fam", FAMILIES)
def test_modes_echo_hold_nonblocking(netpair, peer_cmd, fam):
    lab, addr = netpair, server_addr(netpair, fam)
    echo_port = pick_port()
    hold_port = echo_port + 1
    start_server(lab, peer_cmd, fam, echo_port, "--mode", "echo")
    [line] = client(lab, peer_cmd, addr, echo_port, "--send", 5000, "--half-close", "--nonblocking")
    assert (line["errno"], line["sent"], line["recv_bytes"], line["peer_eof"]) == (0, 5000, 5000, True)

    hold = start_server(lab, peer_cmd, fam, hold_port, "--mode", "hold")
    lines = client(lab, peer_cmd, addr, hold_port, "--count", 3, "--close-first")
    assert [x["errno"] for x in lines] == [0, 0, 0]
    for x in lines:
        assert wait_json_line(hold, lambda o: o["event"] == "accepted", 5)["rport"] == x["sport"]
    # The server keeps all three open after the client's FIN: CLOSE-WAIT.
    assert len(ss(lab, lab.server_ns, "state", "close-wait")) == 3
    assert hold.poll() is None


@pytest.mark.parametrize("fam", FAMILIES)
def test_burst(netpair, peer_cmd, fam):
    lab, port = netpair, pick_port()
    srv = start_server(lab, peer_cmd, fam, port, "--count", 200)
    cp = lab.run(lab.client_ns, peer_cmd("burst", "--addr", server_addr(lab, fam), "--port", port, "--count", 200))
    [line] = json_lines(cp.stdout)
    assert (line["event"], line["ok"], line["failed"], line["errors"]) == ("burst", 200, 0, {})
    assert len(set(line["sports"])) == 200
    assert srv.wait(15) == 0


# -- faults -------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMILIES)
def test_refused_no_listener(netpair, peer_cmd, fam):
    port = pick_port()
    [blocking] = client(netpair, peer_cmd, server_addr(netpair, fam), port)
    [nonblocking] = client(netpair, peer_cmd, server_addr(netpair, fam), port, "--nonblocking")
    for line in (blocking, nonblocking):
        assert (line["errno"], line["error"]) == (errno.ECONNREFUSED, "ECONNREFUSED")
    assert nonblocking["sport"] != 0  # read while the attempt was in progress


@pytest.mark.parametrize("fam", FAMILIES)
def test_nft_tcp_reset(netpair, peer_cmd, fam):
    lab, port = netpair, pick_port()
    start_server(lab, peer_cmd, fam, port)
    nft_input_rule(lab, "inet", f"tcp dport {port} reject with tcp reset")
    [line] = client(lab, peer_cmd, server_addr(lab, fam), port)
    assert line["errno"] == errno.ECONNREFUSED


@pytest.mark.parametrize("fam", FAMILIES)
def test_nft_drop_times_out(netpair, peer_cmd, fam):
    lab, port = netpair, pick_port()
    start_server(lab, peer_cmd, fam, port)
    nft_input_rule(lab, "inet", f"tcp dport {port} drop")
    # TCP_SYNCNT=1: SYN, one retransmit at +1 s, ETIMEDOUT from the kernel at ~+3 s.
    [line] = client(lab, peer_cmd, server_addr(lab, fam), port, "--syncnt", 1, "--timeout", 10)
    assert (line["errno"], line["error"], line["gave_up"]) == (errno.ETIMEDOUT, "ETIMEDOUT", False)
    assert 1_500_000 <= line["latency_us"] <= 8_000_000
    # The client's own deadline: SO_SNDTIMEO makes a blocking connect() return
    # EINPROGRESS; the non-blocking client gives up on poll() and says ETIMEDOUT.
    [blocking] = client(lab, peer_cmd, server_addr(lab, fam), port, "--timeout", 0.3)
    [nonblocking] = client(lab, peer_cmd, server_addr(lab, fam), port, "--timeout", 0.3, "--nonblocking")
    assert (blocking["errno"], blocking["gave_up"]) == (errno.EINPROGRESS, True)
    assert (nonblocking["errno"], nonblocking["gave_up"]) == (errno.ETIMEDOUT, True)
    assert blocking["sport"] and nonblocking["sport"]


ICMP_REJECTS = [
    ("v4", "ip", "icmp type host-unreachable", errno.EHOSTUNREACH),
    ("v4", "ip", "icmp type admin-prohibited", errno.EHOSTUNREACH),
    ("v4", "ip", "icmp type net-unreachable", errno.ENETUNREACH),
    ("v4", "ip", "icmp type port-unreachable", errno.ECONNREFUSED),
    ("v6", "ip6", "icmpv6 type addr-unreachable", errno.EHOSTUNREACH),
    ("v6", "ip6", "icmpv6 type admin-prohibited", errno.EACCES),
    ("v6", "ip6", "icmpv6 type no-route", errno.ENETUNREACH),
    ("v6", "ip6", "icmpv6 type port-unreachable", errno.ECONNREFUSED),
]


@pytest.mark.parametrize("fam,table,reject,expected", ICMP_REJECTS,
                         ids=[f"{r[0]}-{r[2].split()[-1]}" for r in ICMP_REJECTS])
def test_nft_icmp_reject(netpair, peer_cmd, fam, table, reject, expected):
    lab, port = netpair, pick_port()
    start_server(lab, peer_cmd, fam, port)
    nft_input_rule(lab, table, f"tcp dport {port} reject with {reject}")
    [line] = client(lab, peer_cmd, server_addr(lab, fam), port, "--timeout", 10)
    assert (line["errno"], line["error"]) == (expected, errno.errorcode[expected])
    assert line["latency_us"] < 5_000_000


@pytest.mark.parametrize("fam", FAMILIES)
def test_unrouted(netpair, peer_cmd, fam):
    addr = getattr(netpair, f"unrouted_{fam}")
    for mode in ((), ("--nonblocking",)):
        [line] = client(netpair, peer_cmd, addr, 80, *mode)
        assert (line["errno"], line["error"], line["sport"]) == (errno.ENETUNREACH, "ENETUNREACH", 0)


@pytest.mark.parametrize("fam", FAMILIES)
def test_peer_reset(netpair, peer_cmd, fam):
    lab, port = netpair, pick_port()
    srv = start_server(lab, peer_cmd, fam, port, "--mode", "reset")
    [line] = client(lab, peer_cmd, server_addr(lab, fam), port, "--send", 10)
    assert (line["errno"], line["sent"]) == (0, 10)
    assert (line["close_errno"], line["close_error"]) == (errno.ECONNRESET, "ECONNRESET")
    closed = wait_json_line(srv, lambda o: o["event"] == "closed", 5)
    assert (closed["rport"], closed["how"]) == (line["sport"], "reset")


@pytest.mark.parametrize("fam", FAMILIES)
def test_port_exhaustion(netpair, peer_cmd, fam):
    lab, port = netpair, pick_port()
    # The ipv4 sysctl is the only one: it governs IPv6 connects too.
    lab.sysctl(lab.client_ns, "net.ipv4.ip_local_port_range", "40000 40009")
    # Under CPU load (~1 run in 50) the server's listener answers a stray late
    # ACK with a RST (tcp_send_reset reason TCP_FLAGS), and by default an RST
    # kills a TIME_WAIT socket (RFC 1337 "assassination"): its port is freed and
    # the 11th connect succeeds. rfc1337=1 makes TIME_WAIT ignore RSTs.
    lab.sysctl(lab.client_ns, "net.ipv4.tcp_rfc1337", 1)
    start_server(lab, peer_cmd, fam, port)
    lines = client(lab, peer_cmd, server_addr(lab, fam), port, "--count", 11, "--close-first")
    assert [x["errno"] for x in lines] == [0] * 10 + [errno.EADDRNOTAVAIL]
    assert sorted(x["sport"] for x in lines[:10]) == list(range(40000, 40010))
    assert (lines[10]["error"], lines[10]["sport"]) == ("EADDRNOTAVAIL", 0)
    # The ten closed-first connections sit in TIME_WAIT (once the server's FIN arrived).
    deadline = time.monotonic() + 5
    while len(tw := ss(lab, lab.client_ns, "state", "time-wait")) != 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(tw) == 10, (ss(lab, lab.client_ns), ss(lab, lab.server_ns))


# -- cleanup ------------------------------------------------------------------

def test_close_removes_everything(peer_cmd):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    lab = NetPair()
    names = {lab.client_ns, lab.server_ns}
    marker = os.path.join(MARKER_DIR, lab._tag)
    assert names <= set(list_netns()) and os.path.exists(marker)
    srv = start_server(lab, peer_cmd, "v4", pick_port(), "--mode", "hold")
    # An untracked process left inside the namespace: close() must kill it too.
    orphan = int(lab.run(lab.client_ns, ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout)
    assert sweep_stale() == [] and names <= set(list_netns())  # a live pair is never swept

    lab.close()
    assert not names & set(list_netns())
    assert srv.returncode is not None and not os.path.exists(f"/proc/{srv.pid}")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{orphan}") and time.monotonic() < deadline:
        time.sleep(0.05)  # killed at once; its new parent (init) reaps it
    assert not os.path.exists(f"/proc/{orphan}")
    assert not os.path.exists(marker)
    lab.close()  # idempotent


def test_sweep_stale_removes_ownerless_namespaces():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    with NetPair() as live:
        stale = "cs" + os.urandom(3).hex() + "c"
        subprocess.run(["ip", "netns", "add", stale], check=True)
        try:
            removed = sweep_stale()
            assert stale in removed and stale not in list_netns()
            assert {live.client_ns, live.server_ns} <= set(list_netns())
        finally:
            subprocess.run(["ip", "netns", "del", stale], capture_output=True)
