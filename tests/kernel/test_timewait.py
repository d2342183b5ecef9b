"""TIME_WAIT counts and port sysctls of another network namespace, read from
the host namespace through its /run/netns path, against the kernel's own
answers (`ss -tan state time-wait`, /proc/sys inside the namespace).

Each test makes its own namespace pair (tests/netlab.py): a server in the
server namespace, short connections from the client namespace that the client
closes first, so the TIME_WAIT sockets stay in the client namespace.
"""

import errno
import os
import random
import subprocess
import threading
import time
from collections import Counter

import pytest

from agent.ports import (PortReadError, ephemeral_range, in_netns, reserved_ports, timewait_counts,
                         timewait_total, usable_ports)
from netlab import json_lines, wait_json_line

from .conftest import _drain

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (creates network namespaces, setns)")

RANGE = (40000, 40099)
RESERVED = set(range(40010, 40020)) | {40050}


def keep_timewait(pair):
    """net.ipv4.tcp_rfc1337=1 in the client ns: its TIME_WAIT sockets ignore RSTs.

    Without it, about 1 in 70 of these back-to-back connections loses its
    TIME_WAIT socket early here: a late segment from the server (after the
    client is in TIME_WAIT) makes the client ACK it, the server, whose socket
    is already gone, answers with an RST, and an RST kills a TIME_WAIT socket
    (RFC 1337 "TIME-WAIT assassination"; TcpExtTW counts it, ss no longer
    shows it). The counts asserted here must be exact."""
    pair.sysctl(pair.client_ns, "net.ipv4.tcp_rfc1337", 1)


def start_server(pair, peer_cmd, addr, port):
    proc = pair.popen(pair.server_ns, peer_cmd("server", "--addr", addr, "--port", port, "--mode", "close"))
    wait_json_line(proc, lambda j: j["event"] == "listening", timeout=10)
    threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    return proc


def connect_close_first(pair, peer_cmd, addr, port, count):
    """count short connections from the client ns, each closed by the client first."""
    cp = pair.run(pair.client_ns, peer_cmd("client", "--addr", addr, "--port", port,
                                           "--count", count, "--close-first"))
    lines = [j for j in json_lines(cp.stdout) if j["event"] == "connect"]
    assert [j["errno"] for j in lines] == [0] * count, lines
    return lines


def wait_counts(path, expected, timeout=5.0):
    """timewait_counts(path) once it equals expected (the server's FIN may lag), or the last read."""
    deadline = time.monotonic() + timeout
    while True:
        got = timewait_counts(path)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def ss_timewait(pair, ns):
    """The acceptance criterion's ground truth, verbatim."""
    out = pair.run(ns, ["sh", "-c", "ss -Htan state time-wait | wc -l"]).stdout
    return int(out.strip())


def ns_inode(path):
    return os.stat(path).st_ino


def stock_pyroute2_counts():
    """The same dump through pyroute2's stock DiagSocket and its decoded field
    names (cross-checks timewait.py's direct read of struct inet_diag_msg)."""
    import socket

    from pyroute2 import DiagSocket

    counts = Counter()
    with DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ds.get_sock_stats(family=family, states=1 << 6):
                assert msg["idiag_state"] == 6
                counts[(msg["idiag_src"], msg["idiag_dst"], msg["idiag_dport"])] += 1
    return dict(counts)


def test_timewait_and_port_range_of_another_netns(netpair, peer_cmd):
    pair = netpair
    client_path = f"/run/netns/{pair.client_ns}"
    server_path = f"/run/netns/{pair.server_ns}"
    main_ns = ns_inode("/proc/self/ns/net")
    thread_ns = ns_inode("/proc/thread-self/ns/net")
    host_range = ephemeral_range()
    host_reserved = reserved_ports()
    assert host_range != RANGE and host_reserved != RESERVED  # else the check below proves nothing

    # Port sysctls first, so the connections below take their ports from them.
    pair.sysctl(pair.client_ns, "net.ipv4.ip_local_port_range", f"{RANGE[0]} {RANGE[1]}")
    pair.sysctl(pair.client_ns, "net.ipv4.ip_local_reserved_ports", "40010-40019,40050")
    assert ephemeral_range(netns=client_path) == RANGE
    assert reserved_ports(netns=client_path) == RESERVED
    assert usable_ports(*ephemeral_range(client_path), reserved_ports(client_path)) == 89
    assert ephemeral_range() == host_range
    assert reserved_ports() == host_reserved
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert tuple(map(int, f.read().split())) == host_range

    # The helper's thread is inside the namespace; the caller is not.
    assert in_netns(client_path, ns_inode, "/proc/thread-self/ns/net") == ns_inode(client_path)
    assert ns_inode(client_path) != main_ns

    keep_timewait(pair)
    port1 = random.randint(20000, 24999)
    port2 = random.randint(25000, 29999)
    start_server(pair, peer_cmd, pair.server_v4, port1)
    start_server(pair, peer_cmd, pair.server_v6, port2)
    sports = [j["sport"] for j in connect_close_first(pair, peer_cmd, pair.server_v4, port1, 7)]
    sports += [j["sport"] for j in connect_close_first(pair, peer_cmd, pair.server_v6, port2, 5)]
    assert all(RANGE[0] <= p <= RANGE[1] and p not in RESERVED for p in sports), sports

    expected = {
        (pair.client_v4, pair.server_v4, port1): 7,
        (pair.client_v6, pair.server_v6, port2): 5,
    }
    assert wait_counts(client_path, expected) == expected
    assert timewait_total(netns=client_path) == 12 == ss_timewait(pair, pair.client_ns)
    assert in_netns(client_path, stock_pyroute2_counts) == expected
    # The server closed second: no TIME_WAIT there.
    assert timewait_counts(netns=server_path) == {}
    assert ss_timewait(pair, pair.server_ns) == 0
    # The host's own answer has none of the namespace's sockets.
    ours = {pair.client_v4, pair.client_v6, pair.server_v4, pair.server_v6}
    assert not [k for k in timewait_counts() if k[0] in ours or k[1] in ours]

    assert ns_inode("/proc/self/ns/net") == main_ns
    assert ns_inode("/proc/thread-self/ns/net") == thread_ns
    assert ephemeral_range() == host_range


def test_v4_mapped_and_a_multipart_dump(netpair, peer_cmd):
    """An AF_INET6 socket connected to an IPv4 address leaves a TIME_WAIT
    socket of family AF_INET6 (dumped once, with "::ffff:" addresses); and
    3,000 sockets take many netlink messages, all counted."""
    pair = netpair
    client_path = f"/run/netns/{pair.client_ns}"
    port = random.randint(20000, 29999)
    keep_timewait(pair)
    start_server(pair, peer_cmd, pair.server_v4, port)
    connect_close_first(pair, peer_cmd, f"::ffff:{pair.server_v4}", port, 3)
    mapped = {(f"::ffff:{pair.client_v4}", f"::ffff:{pair.server_v4}", port): 3}
    assert wait_counts(client_path, mapped) == mapped
    assert ss_timewait(pair, pair.client_ns) == 3

    cp = pair.run(pair.client_ns, peer_cmd("burst", "--addr", pair.server_v4, "--port", port, "--count", 3000),
                  timeout=60)
    burst = [j for j in json_lines(cp.stdout) if j["event"] == "burst"][0]
    assert burst["ok"] == 3000, burst
    deadline = time.monotonic() + 10
    while True:  # until the server has closed its ends (none left in FIN_WAIT2)
        counts = timewait_counts(client_path)
        if sum(counts.values()) == 3003 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counts == {**mapped, (pair.client_v4, pair.server_v4, port): 3000}
    assert ss_timewait(pair, pair.client_ns) == 3003
    assert in_netns(client_path, stock_pyroute2_counts) == counts


def test_errors_name_the_netns(netpair):
    pair = netpair
    client_path = f"/run/netns/{pair.client_ns}"
    main_ns = ns_inode("/proc/self/ns/net")

    # A process's namespace, gone with the process.
    proc = subprocess.Popen(["ip", "netns", "exec", pair.client_ns, "sleep", "30"])
    try:
        pid_path = f"/proc/{proc.pid}/ns/net"
        deadline = time.monotonic() + 5
        while ns_inode(pid_path) != ns_inode(client_path):  # until exec'd into the ns
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert timewait_counts(pid_path) == {}
        assert ephemeral_range(pid_path) == ephemeral_range(client_path)
    finally:
        proc.kill()
        proc.wait()
    for call in (timewait_counts, timewait_total, ephemeral_range, reserved_ports):
        with pytest.raises(PortReadError) as exc:
            call(pid_path)
        assert exc.value.netns == pid_path and exc.value.errno == errno.ENOENT
        assert str(exc.value) == f"netns {pid_path} is gone (no such namespace)"

    # Not a network namespace.
    with pytest.raises(PortReadError) as exc:
        timewait_counts("/proc/self/ns/mnt")
    assert (exc.value.errno, str(exc.value)) == (errno.EINVAL, "netns /proc/self/ns/mnt is not a network namespace")

    # The kernel fails the dump (no sock_diag handler for protocol 250): an
    # error, not an empty answer.
    with pytest.raises(PortReadError) as exc:
        timewait_counts(client_path, protocol=250)
    assert exc.value.errno == errno.ENOENT
    assert str(exc.value) == (f"cannot dump TIME_WAIT sockets (sock_diag) in netns {client_path}: "
                              "ENOENT (No such file or directory)")
    assert "\n" not in exc.value.one_line()

    # An exception raised by the function itself comes back as it is.
    with pytest.raises(ZeroDivisionError):
        in_netns(client_path, lambda: 1 / 0)
    assert ns_inode("/proc/self/ns/net") == main_ns


def test_own_namespace_needs_no_cap_sys_admin(netpair):
    """The service unit has no CAP_SYS_ADMIN, which setns(2) needs even to
    enter the namespace it is already in: in_netns must not call it then,
    while entering another namespace still fails without it."""
    import shutil
    import sys
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is missing")
    other = f"/run/netns/{netpair.client_ns}"
    code = ("import os; from agent.ports import in_netns, PortReadError\n"
            "print(in_netns(f'/proc/{os.getpid()}/ns/net', lambda: 'own'))\n"
            f"try:\n    in_netns({other!r}, lambda: 'other')\n"
            "except PortReadError as e:\n    print(__import__('errno').errorcode[e.errno])\n")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cp = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", sys.executable, "-c", code],
                        capture_output=True, text=True, timeout=30, cwd=repo)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["own", "EPERM"]
