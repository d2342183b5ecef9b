"""Window summaries and diagnoses from real traffic in namespaces."""

import os
import socket
import subprocess
import time

import pytest

from netlab import pick_port

from ..agentrun import AgentRun, connscope_argv, is_root, skipped_runs
from ..tmux import Terminal, needs_tmux
from .conftest import Lab

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")

WINDOW = 2.0


@pytest.fixture(scope="module")
def summaries():
    run = AgentRun("--summary", "--window", str(WINDOW))
    try:
        yield run
        run.stop()
    finally:
        run.close()


def _of(run, pid, rtype="summary"):
    return [r for r in run.records() if r["type"] == rtype and r["pid"] == pid]


def _total(run, pid, field, want, timeout=3 * WINDOW + 5):
    """The settled sum of a summary field over the process's windows."""
    return run.summed(pid, field, want, timeout)


def test_churn_is_diagnosed_with_its_rate_and_a_pool_is_not(summaries, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    pooled = lab.pair.popen(lab.pair.client_ns, peer_cmd("client", "--addr", lab.server_addr, "--port", port,
                                                         "--comm", "cs-pool", "--send", 100, "--hold", 7,
                                                         "--close-first"))
    n = 240
    t0 = time.monotonic()
    attempts = lab.client(port, "--count", n, "--interval", 0.025, "--close-first", comm="cs-churn")
    elapsed = time.monotonic() - t0
    assert [a["errno"] for a in attempts] == [0] * n
    pid, rate = attempts[0]["pid"], n / elapsed  # about 40 new connections a second
    pooled.wait(30)

    [diag] = summaries.wait_for(lambda r: r["type"] == "diagnosis" and r["pid"] == pid
                                and r["kind"] == "connection_churn" and r["state"] == "raised", timeout=2 * WINDOW + 5)
    assert (diag["daddr"], diag["dport"], diag["comm"]) == (lab.server_addr, port, "cs-churn")
    assert "connection pool" in diag["hint"] and diag["evidence"]["short_lived_share"] == 1.0
    # a window wholly inside the workload measures its rate
    full = [r for r in _of(summaries, pid) if r["window_s"] >= WINDOW * 0.95]
    busiest = max(full, key=lambda r: r["connects_ok"])
    dest = busiest["top_destinations"][0]
    assert (dest["daddr"], dest["dport"]) == (lab.server_addr, port)
    assert abs(dest["new_connections_per_s"] - rate) <= 0.10 * rate, (dest["new_connections_per_s"], rate)
    assert _total(summaries, pid, "connects_ok", n) == n
    assert _total(summaries, pid, "active_closes", n) == n

    pool_pid = pooled.pid
    assert [r for r in summaries.records() if r["type"] == "diagnosis" and r["pid"] == pool_pid] == []
    assert _total(summaries, pool_pid, "connects_ok", 1) == 1


def test_failures_are_counted_per_process_and_errno_with_hints(summaries, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    refused_port, dropped_port, unreach_port = pick_port(), pick_port() + 10000, pick_port() + 20000
    lab.nft_server(f"tcp dport {dropped_port} drop")
    refused = lab.client(refused_port, "--count", 3, comm="cs-refused")
    timedout = lab.client(dropped_port, "--count", 2, "--syncnt", 1, "--timeout", 30, comm="cs-timeout")
    unreach = lab.client(unreach_port, "--count", 2, addr=lab.unrouted, comm="cs-unreach")
    expected = {
        refused[0]["pid"]: ({"ECONNREFUSED": 3}, "connect_refused", "nothing listens on that port"),
        timedout[0]["pid"]: ({"ETIMEDOUT": 2}, "connect_timeout", "silently dropped"),
        unreach[0]["pid"]: ({"ENETUNREACH": 2}, "unreachable", "routing or ICMP unreachable"),
    }
    for pid, (failures, kind, hint) in expected.items():
        [diag] = summaries.wait_for(lambda r: r["type"] == "diagnosis" and r["pid"] == pid and r["state"] == "raised",
                                    timeout=2 * WINDOW + 5)
        assert diag["kind"] == kind and hint in diag["hint"]
        assert _total(summaries, pid, "failures", failures) == failures
        assert _total(summaries, pid, "connects_failed", sum(failures.values())) == sum(failures.values())
        assert sum(r["connects_ok"] for r in _of(summaries, pid)) == 0


def _row(screen: str, comm: str) -> list[str] | None:
    return next((ln.split() for ln in screen.splitlines() if len(ln.split()) > 2 and ln.split()[1] == comm), None)


@needs_tmux
def test_top_in_a_terminal_shows_the_churning_process_first(netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    with Terminal(connscope_argv("top", "--interval", "1", "--duration", "20")) as term:
        term.wait(lambda s: "connscope top" in s, 60, "no screen after start-up")
        slow = lab.pair.popen(lab.pair.client_ns, peer_cmd("client", "--addr", lab.server_addr, "--port", port,
                                                           "--comm", "cs-slow", "--count", 12, "--interval", 0.5,
                                                           "--close-first"))
        lab.client(port, "--count", 150, "--interval", 0.02, "--close-first", comm="cs-churn")
        screen = term.screen()
        slow.wait(30)
    lines = [l for l in screen.splitlines() if l.strip()]
    assert lines[0].startswith("connscope top") and "sorted by churn" in lines[0], screen
    assert lines[1].split()[:4] == ["PID", "COMM", "CONN/s", "ACC/s"], screen
    assert lines[2].split()[1] == "cs-churn", screen
    assert "cs-slow" in screen


@needs_tmux
def test_top_keeps_drawing_after_a_churning_client_stops(netpair, peer_cmd):
    """The screen froze on the last busy interval: now the process drops to
    zero within two intervals and the clock goes on."""
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    with Terminal(connscope_argv("top", "--interval", "1", "--duration", "60")) as term:
        term.wait(lambda s: "connscope top" in s, 60, "no screen after start-up")
        lab.client(port, "--count", 80, "--interval", 0.02, "--close-first", comm="cs-churn")
        stopped = time.time()
        term.wait(lambda s: (_row(s, "cs-churn") or ["", "", "0"])[2] != "0.0", 10, "the churning client never showed")
        zero = term.wait(lambda s: (_row(s, "cs-churn") or ["", "", ""])[2] == "0.0", 10,
                         "the stopped client never dropped to zero")
        clock = zero.splitlines()[0].split(" - ")[1]
        later = term.wait(lambda s: s.splitlines()[0].split(" - ")[1] != clock, 5, "the clock stopped")
    # the zero screen is the interval's own: at most two intervals (plus the
    # second the clock rounds down) after the client's last connection
    h, m, sec = map(int, clock.split(":"))
    shown = time.localtime(stopped)
    delta = (h * 3600 + m * 60 + sec) - (shown.tm_hour * 3600 + shown.tm_min * 60 + shown.tm_sec)
    delta = (delta + 43200) % 86400 - 43200  # across midnight
    assert -1 <= delta <= 3, (clock, time.strftime("%H:%M:%S", shown))
    assert _row(later, "cs-churn")[2] == "0.0"


def test_connect_latency_percentiles_match_the_client_under_syn_loss(summaries, netpair, peer_cmd):
    """About 30% of SYNs are dropped, so those handshakes stall ~1 s in SYN
    retries: the distribution has a fast and a slow mode. The agent's
    sketches, merged across windows with the library, must give the
    percentiles the client measured around connect()."""
    from agent.aggregate import sketch

    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    lab.nft_server(f"tcp dport {port} tcp flags & (syn | ack) == syn numgen random mod 100 < 30 drop")
    n = 40
    attempts = lab.client(port, "--count", n, "--close-first", "--timeout", 30, comm="cs-lat")
    assert [a["errno"] for a in attempts] == [0] * n
    pid = attempts[0]["pid"]
    assert _total(summaries, pid, "connects_ok", n) == n

    def merged_sketch():
        m = sketch.new()
        for r in _of(summaries, pid):
            m.merge(sketch.from_json(r["connect_latency_sketch"]))
        return m

    # The kernel counts a record when it emits it; a record still in flight
    # when a window closes lands in the next window's sketch: wait for it.
    def untimed():
        return sum(r["connects_untimed"] for r in _of(summaries, pid))

    deadline = time.monotonic() + 3 * WINDOW + 5
    merged = merged_sketch()
    while merged.count + untimed() < n and time.monotonic() < deadline:
        time.sleep(0.2)
        merged = merged_sketch()
    # A connect the kernel could not time (it skipped the ESTABLISHED
    # transition: the recursion guard) is counted untimed, never lost, and
    # each such skip is reported in a lost record of the stream.
    u = untimed()
    assert merged.count + u == n
    skipped = skipped_runs(summaries.records())
    assert u <= skipped, (u, skipped)
    client = sorted(a["latency_us"] for a in attempts)
    stalled = sum(1 for a in attempts if a["latency_us"] > 500_000)
    assert 0 < stalled < n, "the drop rule should stall some handshakes and not all"
    # The client's clock runs around the syscall in Python; the kernel's from
    # connect() entry to ESTABLISHED. Tolerance: the sketch's 1% plus 2 ms.
    # With u connects untimed, the sketch's value at a rank lies between the
    # client's values at that rank and u places above it.
    m = n - u
    for q in (0.5, 0.9, 0.99):
        rank = int(q * (m - 1))
        low, high, got = client[rank], client[rank + u], merged.get_quantile_value(q)
        assert low - 0.01 * low - 2000 <= got <= high + 0.01 * high + 2000, (q, got, low, high, client)
    syn_stalled = sum(r["syn_stalled_connects"] for r in _of(summaries, pid))
    assert stalled - u <= syn_stalled <= stalled, (syn_stalled, stalled, u)


def test_summaries_name_the_unit_cgroup_and_command_line(summaries, netpair, peer_cmd):
    import os
    import secrets

    from agent.enrich import find_cgroup2

    found = find_cgroup2()
    if found is None:
        pytest.skip("no cgroup2 mount in /proc/self/mountinfo")
    mount = found[0]
    tag = secrets.token_hex(3)
    slice_dir = os.path.join(mount, f"cstest-{tag}.slice")
    unit_dir = os.path.join(slice_dir, f"cstest-{tag}.service")
    os.makedirs(unit_dir)
    try:
        lab = Lab(netpair, peer_cmd, "ipv4")
        port = pick_port()
        lab.server(port, "close")
        argv = ["ip", "netns", "exec", lab.pair.client_ns, *peer_cmd(
            "client", "--addr", lab.server_addr, "--port", port, "--comm", "cs-unit", "--count", 3, "--close-first",
                # each connection is held for 1 s: the process outlives the agent's
                # read of its /proc entry at its first record, even on a loaded machine
                "--hold", 1)]
        # the shell joins the cgroup, then becomes the client (same pid)
        script = f'echo $$ > {unit_dir}/cgroup.procs && exec "$@"'
        cp = subprocess.run(["sh", "-c", script, "sh", *map(str, argv)], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        pid = [__import__("json").loads(l) for l in cp.stdout.splitlines()][0]["pid"]
        assert _total(summaries, pid, "connects_ok", 3) == 3
        rec = _of(summaries, pid)[0]
        assert rec["cgroup_id"] == os.stat(unit_dir).st_ino
        assert (rec["cgroup_path"], rec["unit"], rec["container_id"]) == (
            f"/cstest-{tag}.slice/cstest-{tag}.service", f"cstest-{tag}.service", None)
        assert rec["comm"] == "cs-unit"
        # taken when its first record arrived, while the process was alive
        assert "tools/peer.py client --addr" in rec["cmdline"] and rec["exe"].startswith("/usr/bin/python3")
    finally:
        for d in (unit_dir, slice_dir):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def test_port_exhaustion_risk_before_eaddrnotavail_then_exhausted(summaries, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    lab.pair.sysctl(lab.pair.client_ns, "net.ipv4.ip_local_port_range", "40000 40009")
    lab.pair.sysctl(lab.pair.client_ns, "net.ipv4.tcp_rfc1337", 1)  # no RST may free a TIME_WAIT port
    attempts = lab.client(port, "--count", 13, "--interval", 0.45, "--close-first", comm="cs-exhaust")
    assert [a["errno"] for a in attempts] == [0] * 10 + [99] * 3
    pid = attempts[0]["pid"]

    def diag(kind):
        return summaries.wait_for(lambda r: r["type"] == "diagnosis" and r["pid"] == pid and r["kind"] == kind
                                  and r["state"] == "raised", timeout=3 * WINDOW + 5)[0]

    risk, exhausted = diag("port_exhaustion_risk"), diag("port_exhausted")
    for d in (risk, exhausted):
        assert (d["daddr"], d["dport"], d["comm"]) == (lab.server_addr, port, "cs-exhaust")
    assert risk["evidence"]["usable_ports"] == 10 and risk["evidence"]["used_share"] >= 0.5
    # Every TIME_WAIT socket there is this client's. The window's active
    # closes are read a moment before the TIME_WAIT dump, so a close falling
    # between the two reads (at most one at 0.45 s apart) counts next window.
    ev = risk["evidence"]
    assert ev["time_wait"] - 1 <= ev["time_wait_left_by_process"] <= ev["time_wait"]
    assert exhausted["evidence"]["failures"]["EADDRNOTAVAIL"] >= 1
    # the summary of that window carries the same port use on its destination
    summary = next(r for r in _of(summaries, pid) if r["window_end"] == risk["window_end"])
    dest = next(d for d in summary["top_destinations"] if (d["daddr"], d["dport"]) == (lab.server_addr, port))
    assert (dest["time_wait"], dest["usable_ports"]) == (ev["time_wait"], 10)
    # raised in a window that ended before the one holding the first EADDRNOTAVAIL
    first_fail = min((r for r in _of(summaries, pid) if r["failures"].get("EADDRNOTAVAIL")),
                     key=lambda r: r["window_end"])
    assert risk["window_end"] < first_fail["window_end"] and risk["seq"] < exhausted["seq"]
    assert "connection pool" in exhausted["hint"]


def test_summary_counts_stay_exact_when_the_buffer_drops_records(netpair, peer_cmd, tmp_path):
    """A one-page ring buffer (about 28 records) overflows under a burst:
    per-connection records are lost, and reported lost, while the counts in
    the summaries, kept in the kernel, stay exact."""
    n = 600
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    _, listening = lab.server(port, "close")
    with AgentRun("--window", "1", "--buffer-pages", "1", "--state-dir", str(tmp_path), command=("run",)) as run:
        cp = lab.pair.run(lab.pair.client_ns, peer_cmd("burst", "--addr", lab.server_addr, "--port", port,
                                                       "--count", n), timeout=120)
        burst = [__import__("json").loads(l) for l in cp.stdout.splitlines()][-1]
        assert burst["ok"] == n
        client = burst["pid"]
        totals = [_total(run, client, "connects_ok", n), _total(run, client, "active_closes", n),
                  _total(run, listening["pid"], "accepts", n), _total(run, listening["pid"], "closes", n)]
        recs = run.stop()
    lost = sum(r["count"] for r in recs if r["type"] == "lost" and r["reason"] == "buffer_full")
    assert lost > 0, "the one-page buffer should have overflowed"
    # Buffer drops cannot make the counts drift. An event the kernel skipped
    # (its per-CPU recursion guard) is a loss of its own, reported as such:
    # each costs at most one count.
    skipped = skipped_runs(recs)
    assert all(n - skipped <= t <= n for t in totals), (totals, skipped)
    if skipped == 0:
        assert totals == [n] * 4
    assert all(r["counts_from"] == "kernel" for r in recs if r["type"] == "summary")


def test_summaries_count_only_what_the_filters_let_through():
    """Filters apply before aggregation (README "Summaries"): with --port P a
    process's summary counts its connections to P, not those to another port."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    kept, other = (ls.getsockname()[1] for ls in listeners)
    try:
        with AgentRun("--summary", "--window", "1", "--port", str(kept)) as run:
            for port, n in ((kept, 3), (other, 2)):
                for _ in range(n):
                    socket.create_connection(("127.0.0.1", port)).close()
                    listeners[port == other].accept()[0].close()
            me = os.getpid()
            run.wait_for(lambda r: r["type"] == "summary" and r["pid"] == me and r["connects_ok"] > 0)
            recs = run.stop()
    finally:
        for ls in listeners:
            ls.close()
    mine = [r for r in recs if r["type"] == "summary" and r["pid"] == me]
    assert sum(r["connects_ok"] for r in mine) == 3 and sum(r["accepts"] for r in mine) == 3, mine


def test_one_cause_one_diagnosis_host_unreachable_after_syn_retransmits(summaries, netpair, peer_cmd):
    """A destination on the link that answers no ARP: the kernel retransmits
    the SYN while it resolves the neighbour, then reports EHOSTUNREACH. That is
    one cause: `unreachable` (with the SYN retransmits in its evidence), not
    also `connect_timeout` ("silently dropped")."""
    lab = Lab(netpair, peer_cmd, "ipv4")
    absent = lab.server_addr.rsplit(".", 1)[0] + ".77"  # on the veth's /24, no host: ARP fails
    port = pick_port()
    [c] = lab.client(port, "--timeout", 30, addr=absent, comm="cs-arpfail")
    assert c["errno"] == 113, c
    pid = c["pid"]
    [diag] = summaries.wait_for(lambda r: r["type"] == "diagnosis" and r["pid"] == pid and r["state"] == "raised",
                                timeout=2 * WINDOW + 5)
    assert diag["kind"] == "unreachable" and diag["evidence"]["failures"] == {"EHOSTUNREACH": 1}
    syn = _total(summaries, pid, "syn_retransmits", diag["evidence"]["syn_retransmits"])
    assert syn >= 1 and diag["evidence"]["syn_retransmits"] == syn
    time.sleep(2 * WINDOW)  # two more windows: nothing else may be raised for it
    assert [r["kind"] for r in _of(summaries, pid, "diagnosis") if r["state"] == "raised"] == ["unreachable"]


def test_one_short_lived_process_per_connection_churns_as_a_command(summaries, netpair, peer_cmd):
    """A shell script that opens each connection from a new subshell (one
    process per request, as a script running curl does) at about 15/s: no
    process makes more than one connection, the command does."""
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    script = (f"for i in $(seq 45); do (exec 3<>/dev/tcp/{lab.server_addr}/{port}); sleep 0.05; done; "
              "echo $$")
    cp = lab.pair.run(lab.pair.client_ns, ["bash", "-c", script], timeout=60)
    script_pid = int(cp.stdout.split()[-1])
    [diag] = summaries.wait_for(lambda r: r["type"] == "diagnosis" and r["kind"] == "connection_churn"
                                and r.get("scope") == "command" and r["comm"] == "bash" and r["dport"] == port,
                                timeout=3 * WINDOW + 5)
    assert (diag["pid"], diag["daddr"], diag["state"]) == (0, lab.server_addr, "raised")
    assert diag["evidence"]["processes"] >= 2 and diag["evidence"]["new_connections_per_s"] >= 10
    # each connection came from its own process: none of them churned alone
    summaries_ = [r for r in summaries.records() if r["type"] == "summary" and r["comm"] == "bash"
                  and any(d["dport"] == port for d in r["top_destinations"])]
    assert len({r["pid"] for r in summaries_}) >= 30 and script_pid not in {r["pid"] for r in summaries_}
    assert all(r["connects_ok"] == 1 for r in summaries_)
    assert not [r for r in summaries.records() if r["type"] == "diagnosis" and r["comm"] == "bash"
                and r["dport"] == port and r.get("scope") != "command"]
