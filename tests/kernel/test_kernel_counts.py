"""Counted in the kernel: storms, bursts and sampling leave summaries exact.

Ground truth is the generator's own count of what connect() returned; the
agent's figures come from its kernel rows (bpf/aggregate.c).
"""

import json
import os
import socket
import threading
import time

import pytest

from netlab import pick_port

from ..agentrun import AgentRun, is_root, skipped_runs
from .conftest import Lab

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")


def _burst(lab, port, n, comm):
    cp = lab.pair.run(lab.pair.client_ns, lab.peer_cmd("burst", "--addr", lab.server_addr, "--port", port,
                                                       "--count", n, "--comm", comm), timeout=300)
    return json.loads(cp.stdout.splitlines()[-1])


def _sum(run, pid, field, want, timeout=20.0):
    """A summary field summed over a process's windows, once it reaches `want`
    or the windows stop changing it."""
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in run.records() if r["type"] == "summary" and r["pid"] == pid]
        if field == "failures":
            total = {}
            for r in recs:
                for k, v in r["failures"].items():
                    total[k] = total.get(k, 0) + v
        else:
            total = sum(r[field] for r in recs)
        if total == want or time.monotonic() > deadline:
            return total
        time.sleep(0.2)


def _service(tmp_path, *args):
    return AgentRun("--state-dir", str(tmp_path), "--window", "1", "--status-interval", "0", *args,
                    command=("run",))


def test_a_refused_storm_is_counted_exactly_and_its_records_folded(tmp_path, netpair, peer_cmd):
    """20,000 refused connects as fast as one client makes them: every one is
    counted, by errno, with no loss; past 50 per window and CPU the kernel
    stops sending their records and says how many it folded."""
    n, per_window = 20_000, 50
    lab = Lab(netpair, peer_cmd, "ipv4")
    closed = pick_port()
    with _service(tmp_path, "--failure-records", str(per_window)) as run:
        b = _burst(lab, closed, n, "cs-storm")
        assert (b["failed"], b["errors"]) == (n, {"ECONNREFUSED": n})
        failures = _sum(run, b["pid"], "failures", {"ECONNREFUSED": n})
        folded = _sum(run, b["pid"], "failure_records_folded", None, timeout=0)
        recs = run.stop()
    assert failures == {"ECONNREFUSED": n}
    sent = [r for r in recs if r["type"] == "connect" and r["pid"] == b["pid"]]
    assert all(r["error"] == "ECONNREFUSED" for r in sent)
    assert len(sent) + folded == n and folded > 0, (len(sent), folded)
    assert [r for r in recs if r["type"] == "lost"] == []
    windows = len([r for r in recs if r["type"] == "summary" and r["pid"] == b["pid"]])
    assert len(sent) <= per_window * os.cpu_count() * windows + 1  # + the process's first record
    assert recs[-1]["kernel_counters"]["folded"] >= folded


def test_a_20000_connection_burst_leaves_exact_counts(tmp_path, netpair, peer_cmd):
    """Service mode: no record per connection reaches user space, and the
    client's and the server's summaries count every connection."""
    n = 20_000
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    _, listening = lab.server(port, "close")
    with _service(tmp_path, "--no-connections") as run:
        b = _burst(lab, port, n, "cs-burst20k")
        assert b["ok"] == n
        got = [_sum(run, b["pid"], "connects_ok", n), _sum(run, b["pid"], "active_closes", n),
               _sum(run, listening["pid"], "accepts", n), _sum(run, listening["pid"], "closes", n)]
        recs = run.stop()
    skipped = skipped_runs(recs)
    assert all(n - skipped <= t <= n for t in got), (got, skipped)
    if skipped == 0:
        assert got == [n] * 4
    assert [r for r in recs if r["type"] in ("connect", "accept", "close")] == []
    assert [r for r in recs if r["type"] == "lost" and r["reason"] != "recursion_miss"] == []


def _loopback_churn(n: int) -> int:
    """n connections to a listener of this process, the client closing first."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=512)
    port = srv.getsockname()[1]

    def serve():
        for _ in range(n):
            c = srv.accept()[0]
            c.recv(1)
            c.close()

    t = threading.Thread(target=serve)
    t.start()
    for _ in range(n):
        socket.create_connection(("127.0.0.1", port)).close()
    t.join()
    srv.close()
    return port


def test_sampling_in_the_kernel_cuts_what_the_reader_receives_and_costs():
    """keep_one_in = 16 in the kernel's knobs: the reader receives about one
    record in 16 and spends less CPU (its thread's own CPU clock) reading
    the same traffic, while the kernel's rows still count every connection."""
    from agent.decode import layout as L
    from agent.decode.aggregates import rows
    from agent.kernel.loader import LoadOptions, Tracer

    n, keep = 1500, 16
    tracer = Tracer(LoadOptions(aggregate=True))
    try:
        def phase(keep_one_in):
            tracer.knobs.set(L.KNOB_KEEP_ONE_IN, keep_one_in)
            tracer.take_aggregates()
            tracer.take_aggregates()  # both generations empty
            cpu0 = time.thread_time_ns()
            received = []
            port = [None]
            t = threading.Thread(target=lambda: port.__setitem__(0, _loopback_churn(n)))
            t.start()
            while t.is_alive():
                received += tracer.poll(50)
            t.join()
            # What is still in the ring: until a whole second brings nothing
            # (a poll returns after one 50 ms tick at most).
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 1.0:
                more = tracer.poll(50)
                if more:
                    received += more
                    quiet_since = time.monotonic()
            cpu = time.thread_time_ns() - cpu0
            mine = [e for e in received if port[0] in (e.sport, e.dport) and e.pid == os.getpid()]
            counted = [r for r in rows(*tracer.take_aggregates()) if r.pid == os.getpid() and r.port == port[0]]
            return mine, cpu, counted

        all_recs, cpu_all, counted_all = phase(1)
        sampled, cpu_sampled, counted = phase(keep)
        skipped = sum(tracer.recursion_misses().values())
    finally:
        tracer.close()
    per_conn = 4  # connect, accept, two closes
    assert n * per_conn - skipped <= len(all_recs) <= n * per_conn
    assert len(sampled) <= n * per_conn / keep * 1.5, (len(sampled), n * per_conn / keep)
    assert cpu_sampled < cpu_all / 2, (cpu_sampled, cpu_all)
    for got in (counted_all, counted):
        by_dir = {r.dest[2]: r.counts for r in got}
        assert by_dir["outbound"]["connects_ok"] >= n - skipped and by_dir["inbound"]["accepts"] >= n - skipped


def test_two_agents_windows_merged_equal_one_long_window(netpair, peer_cmd):
    """Two agents watch the same connections, one in 1 s windows and one in
    a window longer than the traffic: the short windows' counts add up to
    the long window's, and their sketches merged with the library hold as
    many values and give the long window's median. Each agent times a
    handshake with its own program's clock reads, and one agent's programs
    run inside the other's timing, so values differ by microseconds (tails
    by more): exact bin-for-bin merging of the same values is tests/pure's."""
    from agent.aggregate import sketch

    n = 60
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    with AgentRun("--summary", "--window", "1") as short, AgentRun("--summary", "--window", "30") as long_:
        attempts = lab.client(port, "--count", n, "--interval", 0.05, "--close-first", comm="cs-merge")
        assert [a["errno"] for a in attempts] == [0] * n
        pid = attempts[0]["pid"]
        assert _sum(short, pid, "connects_ok", n) == n
        recs_long = long_.stop()  # its one window closes at the stop
        recs_short = short.stop()
    mine_long = [r for r in recs_long if r["type"] == "summary" and r["pid"] == pid]
    mine_short = [r for r in recs_short if r["type"] == "summary" and r["pid"] == pid]
    assert len(mine_short) > 1
    assert sum(r["connects_ok"] for r in mine_long) == sum(r["connects_ok"] for r in mine_short) == n
    assert sum(r["closes"] for r in mine_long) == sum(r["closes"] for r in mine_short)
    for name in ("connect_latency_sketch", "lifetime_sketch"):
        merged_short, merged_long = sketch.new(), sketch.new()
        for r in mine_short:
            merged_short.merge(sketch.from_json(r[name]))
        for r in mine_long:
            merged_long.merge(sketch.from_json(r[name]))
        assert merged_short.count == merged_long.count
        if name == "connect_latency_sketch":
            assert merged_short.count == n
        a, b = merged_short.get_quantile_value(0.5), merged_long.get_quantile_value(0.5)
        assert abs(a - b) <= 0.1 * max(a, b) + 10, (name, a, b)
