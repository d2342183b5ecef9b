"""The CLI as a user runs it: filters, errors, check, and the table on a terminal."""

import os
import re
import shutil
import subprocess

import pytest

from agent.kernel import ringbuf
from netlab import NetPair, json_lines, pick_port, wait_json_line

from ..agentrun import AgentRun, REPO, connscope_argv, is_root, probed_method
from ..kernel.conftest import Lab
from ..tmux import Terminal, needs_tmux

needs_root = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")


def run_cli(*args, timeout=60, **kw):
    return subprocess.run(connscope_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def assert_one_line_error(cp, code, *needles, stdout=""):
    assert cp.returncode == code, (cp.returncode, cp.stderr)
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {cp.stderr!r}"
    assert lines[0].startswith("connscope: ") and "Traceback" not in cp.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    if stdout is not None:
        assert cp.stdout == stdout


# --- bad input --------------------------------------------------------------

@pytest.mark.parametrize("args,needles", [
    (["trace", "--port", "70000"], ["--port", "70000", "fix: see `connscope trace --help`"]),
    (["trace", "--pid", "0"], ["--pid"]),
    (["trace", "--duration", "-1"], ["--duration"]),
    (["trace", "--comm", "a-name-longer-than-15"], ["--comm", "15 bytes"]),
    (["trace", "--bogus"], ["--bogus"]),
    (["trace", "--buffer-pages", "3"], ["--buffer-pages", "power of two"]),
    (["check", "--force-hook", "tcp_connect=carrier-pigeon"], ["--force-hook", "tcp_connect=fentry|kprobe|tracepoint"]),
    (["check", "--force-hook", "tcp_connect=off"], ["--force-hook", "nagle=raw_tracepoint|fentry|kprobe|off"]),
    (["nonsense"], ["nonsense"]),
    (["trace", "--summary", "--threshold", "churn=3"], ["--threshold", "churn_per_s", "short_lifetime_us"]),
    (["trace", "--summary", "--threshold", "refused=many"], ["refused takes a number"]),
    (["trace", "--summary", "--threshold", "timeouts=-1"], ["cannot be negative"]),
    # flags that contradict each other, or do nothing without another
    (["trace", "-4", "-6"], ["-4 and -6 exclude each other", "give neither"]),
    (["trace", "--window", "5"], ["--window only applies with --summary"]),
    (["trace", "--threshold", "refused=1"], ["--threshold only applies with --summary"]),
    (["trace", "--cmdline", "full"], ["--cmdline only applies with --summary"]),
    (["trace", "--sensitive-word", "pin"], ["--sensitive-word only applies with --summary"]),
])
def test_bad_flags_give_one_line_and_exit_2(args, needles):
    assert_one_line_error(run_cli(*args), 2, *needles)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@needs_root
def test_missing_privilege_is_one_line_naming_the_capabilities():
    cp = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                         *connscope_argv("trace", "--duration", "1")],
                        capture_output=True, text=True, timeout=60, cwd="/")
    assert_one_line_error(cp, 1, "uid 65534", "CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH", "fix: run as root")


# --- check ------------------------------------------------------------------

@needs_root
def test_check_lists_every_hook_and_exits_0():
    cp = run_cli("check")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    host = lines[:lines.index("")]
    assert host[0].split() == ["HOST", "STATE", "DETAIL"]
    assert {line.split()[0]: line.split()[1] for line in host[1:] if not line.startswith(" ")} == {
        "privileges": "ok", "tracefs": "ok", "headers": "ok", "btf": "ok", "cgroup2": "ok"}
    rows = {line.split()[0]: line.split()[1:3] for line in lines if line and not line.startswith(" ")}
    for name in ("tcp_connect", "lifecycle", "error_report", "destroy", "connect_syscall", "retransmit",
                 "reset_sent", "reset_received", "first_io", "event_buffer"):
        assert rows[name][1] in ("active", "missing"), name
    assert rows["lifecycle"] == [probed_method("lifecycle"), "active"]
    assert rows["READER"] == ["mmap" if ringbuf.supported()[0] else "libbpf", "ok"]
    assert rows["SINK"] == ["stdout", "ok"]


@needs_root
def test_check_fails_when_a_required_hook_cannot_attach():
    from agent.kernel import features

    probe = features.fentry("tcp_connect")
    if probe:
        pytest.skip("fentry works on this kernel: forcing it cannot fail")
    cp = run_cli("check", "--force-hook", "tcp_connect=fentry")
    assert_one_line_error(cp, 1, "hook tcp_connect cannot attach", probe.reason, stdout=None)
    assert cp.stdout.startswith("HOST ")  # the host report comes before the failing load


# --- trace: duration, filters, table ---------------------------------------------

def _traffic(pair, peer_cmd, p_refused):
    """A: cs-a connects over IPv4 and succeeds. B: cs-b is refused over IPv6."""
    v4, v6 = Lab(pair, peer_cmd, "ipv4"), Lab(pair, peer_cmd, "ipv6")
    p_ok = pick_port()
    v4.server(p_ok, "close", "cs-srv")
    [a] = v4.client(p_ok, "--close-first", comm="cs-a")
    [b] = v6.client(p_refused, comm="cs-b")
    assert (a["errno"], b["errno"]) == (0, 111)
    return p_ok


def _conn_records(records):
    return [r for r in records if r["type"] in ("connect", "accept", "close")]


@needs_root
def test_trace_pid_filter(netpair, peer_cmd):
    # a server started first, so its pid is known before the agent starts;
    # its listen() predates the agent, in another namespace
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    _, listening = lab.server(port, "close", "cs-srv")
    with AgentRun("--pid", str(listening["pid"])) as run:
        [c] = lab.client(port, "--close-first", comm="cs-a")
        recs = _conn_records(run.stop())
    assert {r["pid"] for r in recs} == {listening["pid"]}
    assert sorted(r["type"] for r in recs) == ["accept", "close"]
    assert all(r["dport"] == c["sport"] for r in recs)
    assert [r["pid_source"] for r in recs if r["type"] == "accept"] == ["listener"]


@needs_root
@pytest.mark.parametrize("flt", ["--comm", "--port", "--failures", "-4", "-6"])
def test_trace_filters(flt, netpair, peer_cmd):
    p_refused = pick_port() + 10000
    args = {"--comm": ["--comm", "cs-b"], "--port": ["--port", str(p_refused)], "--failures": ["--failures"],
            "-4": ["-4"], "-6": ["-6"]}[flt]
    with AgentRun(*args) as run:
        p_ok = _traffic(netpair, peer_cmd, p_refused)
        recs = _conn_records(run.stop())
    a_recs = [r for r in recs if p_ok in (r["sport"], r["dport"])]
    b_recs = [r for r in recs if r["dport"] == p_refused]
    if flt == "-4":
        assert sorted(r["type"] for r in a_recs) == ["accept", "close", "close", "connect"]
        assert b_recs == [] and {r["family"] for r in recs} == {"ipv4"}
        return
    assert len(b_recs) == 1 and b_recs[0]["comm"] == "cs-b" and b_recs[0]["error"] == "ECONNREFUSED"
    assert a_recs == []
    if flt == "--comm":
        assert {r["comm"] for r in recs} == {"cs-b"}
    if flt == "--port":
        assert all(p_refused in (r["sport"], r["dport"]) for r in recs)
    if flt == "--failures":
        assert all(r["errno"] or r["error"] or r.get("closed_by") == "reset" for r in recs)
    if flt == "-6":
        assert {r["family"] for r in recs} == {"ipv6"}


@needs_root
def test_duration_exits_by_itself_with_a_stop_record():
    cp = run_cli("trace", "--json", "--duration", "1.5", timeout=60)
    assert cp.returncode == 0, cp.stderr
    recs = json_lines(cp.stdout)
    assert recs[0]["type"] == "agent" and recs[0]["event"] == "start"
    assert recs[-1]["type"] == "agent" and recs[-1]["event"] == "stop"
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))


@needs_root
@pytest.mark.skipif(shutil.which("script") is None, reason="needs script (util-linux) for a pty")
def test_trace_on_a_terminal_prints_a_table(netpair, peer_cmd):
    import sys
    import time

    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close", "cs-srv")
    cmd = " ".join(connscope_argv("trace", "--duration", "6", "--port", str(port)))
    term = subprocess.Popen(["script", "-qfec", cmd, "/dev/null"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=REPO, env={**os.environ, "COLUMNS": "160"})
    time.sleep(3)  # the agent compiles and attaches
    [c] = lab.client(port, "--close-first", comm="cs-a")
    out, err = term.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert "{" not in text, "JSON on a terminal"
    lines = [l.rstrip() for l in text.splitlines() if l.strip()]
    header = next(l for l in lines if l.startswith("TIME"))
    assert header.split() == ["TIME", "TYPE", "PID", "COMM", "LOCAL", "REMOTE", "RESULT", "CONNECT", "LIFETIME",
                              "RETR"]
    assert all(len(l) <= 160 for l in lines), "a line wider than the terminal"
    conn = [l for l in lines if " connect " in l and f":{port}" in l]
    assert len(conn) == 1
    fields = conn[0].split()
    assert fields[1:4] == ["connect", str(c["pid"]), "cs-a"]
    assert fields[4] == f"{lab.client_addr}:{c['sport']}" and fields[5] == f"{lab.server_addr}:{port}"
    assert fields[6] == "ok" and fields[7].endswith("ms") and fields[8] == "-"  # latency, no lifetime
    [close] = [l.split() for l in lines if " close " in l and f":{port}" in l and "by local" in l]
    assert close[8] == "-" and close[9][-1] == "s"  # lifetime, with its unit, no latency


@needs_root
def test_top_without_a_terminal_prints_one_snapshot_per_interval(netpair, peer_cmd):
    import time

    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close", "cs-srv")
    proc = subprocess.Popen(connscope_argv("top", "--interval", "1", "--duration", "7"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    time.sleep(2.5)
    lab.client(port, "--count", 80, "--interval", 0.04, "--close-first", comm="cs-churn")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "\x1b[" not in out, "no screen control codes when stdout is not a terminal"
    snapshots = [block.splitlines() for block in out.strip().split("\n\n") if block.startswith("connscope top")]
    assert len(snapshots) >= 2, out
    for snap in snapshots:
        assert snap[1].split()[:4] == ["PID", "COMM", "CONN/s", "ACC/s"]
    # while it churns it is first; once it stops it lingers at zero, below
    # processes with rows of their own (the server's late closes)
    churning = [s for s in snapshots if any(l.split()[1] == "cs-churn" and float(l.split()[2]) > 0 for l in s[2:])]
    assert churning and all(s[2].split()[1] == "cs-churn" for s in churning)


@needs_root
@needs_tmux
@pytest.mark.parametrize("width", [80, 200])
def test_trace_table_in_a_terminal_never_wraps(netpair, peer_cmd, width):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close", "cs-srv")

    def lines(screen: str) -> list[str]:
        return [l.rstrip() for l in screen.splitlines() if l.strip()]

    with Terminal(connscope_argv("trace", "--duration", "60", "--port", str(port)), width=width, height=50) as term:
        term.wait(lambda s: any(l.startswith("-- agent start") for l in lines(s)), 60, "no start banner")
        [c] = lab.client(port, "--close-first", comm="cs-a")
        # joined: what the terminal wrapped shows as one line wider than it
        shown = lines(term.wait(lambda s: any(" close" in l and f" {c['pid']} " in l for l in lines(s)), 60,
                                "no close row", joined=True))
    assert all(len(l) <= width for l in shown), [l for l in shown if len(l) > width]
    head = next(l for l in shown if l.startswith("TIME")).split()
    assert head[-3:] in (["CONNECT", "LIFETIME", "RETR"], ["RESULT", "CONNECT", "LIFETIME"])
    conn = next(l.split() for l in shown if f" {c['pid']} " in l and l.split()[1].startswith("conn"))
    assert conn[head.index("CONNECT")].endswith("ms") and conn[head.index("LIFETIME")] == "-"
    assert any(l.startswith("   ") for l in shown) or width >= 200  # the banner wraps with an indent at 80
