"""The hook chain: what is chosen, why, and that each usable method really works.

A method the kernel lacks is skipped with the probe's reason; where the
probe says it exists, the test runs and must pass.
"""

import os
import socket
import threading

import pytest

from agent.kernel import features
from agent.kernel.hooks import HOOKS, hook

from ..agentrun import AgentRun, is_root, probed_method

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")


def test_start_record_reports_every_hook_as_probed():
    with AgentRun("--duration", "2") as run:
        hooks = run.start["hooks"]
        assert set(hooks) == {h.name for h in HOOKS}
        for h in HOOKS:
            assert hooks[h.name]["method"] == probed_method(h.name), h.name
            assert hooks[h.name]["state"] == ("active" if probed_method(h.name) else "missing")
        # each method skipped before the chosen one is listed with its reason
        chosen = hooks["tcp_connect"]["method"]
        names = [m.name for m in hook("tcp_connect").methods]
        skipped = hooks["tcp_connect"]["fallbacks_skipped"]
        assert [s.split(":")[0] for s in skipped] == names[: names.index(chosen)]
        run.stop()


def test_this_kernel_falls_back_to_the_tracepoint_for_tcp_connect():
    """KERNEL-FACTS: this machine kind refuses fentry (EPERM) and has no kprobes."""
    if features.fentry("tcp_connect") or features.kprobes():
        pytest.skip("this kernel has fentry or kprobes: the tracepoint fallback is not the choice here")
    with AgentRun("--duration", "2") as run:
        tc = run.start["hooks"]["tcp_connect"]
        assert tc["method"] == "tracepoint"
        assert tc["fallbacks_skipped"][0].startswith("fentry: fentry program load refused")
        assert "CONFIG_KPROBES" in tc["fallbacks_skipped"][1]
        run.stop()


def _loopback_roundtrip(host: str = "127.0.0.1") -> int:
    srv = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    port = srv.getsockname()[1]

    def serve():  # closes only after the client's FIN: the client closes first
        conn = srv.accept()[0]
        conn.recv(1)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    socket.create_connection((host, port)).close()
    t.join()
    srv.close()
    return port


@pytest.mark.parametrize("hook_name,method", [(h.name, m.name) for h in HOOKS for m in h.methods if len(h.methods) > 1])
def test_each_usable_method_traces_a_connection(hook_name, method):
    m = next(m for m in hook(hook_name).methods if m.name == method)
    probe = m.probe()
    if not probe:
        pytest.skip(f"{hook_name}={method} not on this kernel: {probe.reason}")
    with AgentRun("--force-hook", f"{hook_name}={method}") as run:
        assert run.start["hooks"][hook_name]["method"] == method
        for host in ("127.0.0.1", "::1"):  # the addresses and ports each method reads
            port = _loopback_roundtrip(host)
            [rec] = run.wait_for(lambda r: r["type"] == "connect" and r["dport"] == port and r["result"] == "ok")
            assert rec["pid"] > 0 and rec["pid_source"] == "connect"
            assert (rec["saddr"], rec["daddr"]) == (host, host) and rec["sport"] > 0
            [close] = run.wait_for(lambda r: r["type"] == "close" and r["dport"] == port
                                   and r["direction"] == "outbound")
            assert (close["sport"], close["closed_by"], close["time_wait"]) == (rec["sport"], "local", True)
        # a refused connect: the errno comes from the error report, the RST
        # from the reset hook, the end from the state change
        refused = _refused_port()
        [fail] = run.wait_for(lambda r: r["type"] == "connect" and r["dport"] == refused)
        assert (fail["errno"], fail["error"], fail["resets_received"]) == (111, "ECONNREFUSED", 1)
        run.stop()


def _refused_port() -> int:
    """A loopback port nothing listens on, connected to once (and refused)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port))
    return port


@pytest.mark.parametrize("aggregate", [False, True])
def test_window_counts_are_kept_in_the_kernel_only_when_asked(aggregate):
    """Plain tracing pays no aggregation; summaries get the kernel's rows:
    this process's connect (outbound to the port) and accept (inbound on it)."""
    import os
    import time

    from agent.decode import layout as L
    from agent.decode.aggregates import rows
    from agent.kernel.loader import LoadOptions, Tracer

    tracer = Tracer(LoadOptions(aggregate=aggregate))
    try:
        port = _loopback_roundtrip()
        deadline, seen = time.monotonic() + 10, []
        while time.monotonic() < deadline and not any(e.type == L.EV_CONNECT and e.dport == port for e in seen):
            seen += tracer.poll(100)
        assert any(e.type == L.EV_CONNECT and e.dport == port and e.pid == os.getpid() for e in seen)
        mine = {r.dest: r for r in rows(*tracer.take_aggregates()) if r.pid == os.getpid() and r.port == port}
        if aggregate:
            out, inb = mine[("127.0.0.1", port, "outbound")], mine[("*", port, "inbound")]
            assert (out.counts["connects_ok"], sum(out.latency.values()), out.counts["accepts"]) == (1, 1, 0)
            assert (inb.counts["accepts"], inb.counts["connects_ok"]) == (1, 0)
        else:
            assert mine == {} and b"agg_rows0" not in tracer.bpf.tables
    finally:
        tracer.close()


def test_the_agent_takes_the_expected_methods(agent):
    """The stock-kernel tier names, per kernel, the method each hook must
    take ($CSTEST_EXPECT_HOOKS, hook=method ...), forced ones included."""
    want = dict(p.split("=", 1) for p in os.environ.get("CSTEST_EXPECT_HOOKS", "").split())
    if not want:
        pytest.skip("no expected methods given (the stock-kernel tier gives them per kernel)")
    hooks = agent.start["hooks"]
    assert {k: hooks[k]["method"] for k in want} == want
    assert all(hooks[k]["state"] == "active" for k in want)


def test_an_optional_hook_turned_off_is_left_out_and_says_so():
    """nagle=off: its cost (a run per write) is gone, the start record says why,
    and --strict does not count a hook turned off on purpose as a miss."""
    # --strict only where every other optional hook has a method here (it would fail on them)
    strict = ["--strict"] if all(probed_method(h.name) for h in HOOKS if h.name != "nagle") else []
    with AgentRun("--force-hook", "nagle=off", *strict) as run:
        st = run.start["hooks"]["nagle"]
        assert (st["method"], st["state"]) == (None, "off"), st
        assert st["fallbacks_skipped"] and all("nagle=off" in why for why in st["fallbacks_skipped"]), st
        port = _loopback_roundtrip("127.0.0.1")  # the rest traces as before
        run.wait_for(lambda r: r["type"] == "connect" and r["dport"] == port and r["result"] == "ok")
