"""`connscope run` as systemd runs it: notify socket, watchdog, signals, reload, metrics, overload."""

import json
import math
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from netlab import pick_port

from ..agentrun import AgentRun, REPO, connscope_argv, is_root, probed_method, skipped_runs
from ..kernel.conftest import Lab

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")


def start(tmp_path, *args, env=None):
    return AgentRun("--state-dir", str(tmp_path / "state"), *args, command=("run",), env=env)


def burst(lab, port, n, comm="cs-burst"):
    cp = lab.pair.run(lab.pair.client_ns, lab.peer_cmd("burst", "--addr", lab.server_addr, "--port", port,
                                                       "--count", n, "--comm", comm), timeout=120)
    return json.loads(cp.stdout.splitlines()[-1])


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket named by $NOTIFY_SOCKET, read continuously."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def wait(self, until, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until(list(self.messages)):
                return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"notify: {self.messages}")

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_ready_watchdog_status_then_a_clean_stop(tmp_path, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    note = NotifySocket(tmp_path / "notify")
    try:
        with start(tmp_path, "--status-interval", "1",
                   env={"NOTIFY_SOCKET": note.path, "WATCHDOG_USEC": "500000"}) as run:
            msgs = note.wait(lambda m: any("READY=1" in x for x in m))
            [attempt] = lab.client(port)
            assert attempt["errno"] == 111
            run.wait_for(lambda r: r["type"] == "connect" and r["dport"] == port and r["errno"] == 111)
            [status] = run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "status", timeout=10)[:1]
            assert status["records_per_s"] and status["rss_bytes"] > 0 and status["queue_depth"] >= 0
            assert set(status["lost"]) == {"kernel", "queue", "sink"}
            msgs = note.wait(lambda m: sum(x == "WATCHDOG=1" for x in m) >= 3)
            assert any(x.startswith("STATUS=") and "records/s" in x for x in msgs)
            recs = run.stop(signal.SIGTERM)
            assert run.proc.returncode == 0
        note.wait(lambda m: "STOPPING=1" in m, timeout=5)
        assert recs[-1]["type"] == "agent" and recs[-1]["event"] == "stop"
        assert any(r["type"] == "summary" for r in recs), "the final, partial window is summarised at stop"
    finally:
        note.close()


def test_sigterm_under_load_loses_no_record(tmp_path, netpair, peer_cmd):
    """Every connection made before SIGTERM appears in a record, or is counted in a `lost` record."""
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    with start(tmp_path) as run:
        load = lab.pair.popen(lab.pair.client_ns, peer_cmd("burst", "--addr", lab.server_addr, "--port", port,
                                                           "--count", 20000, "--comm", "cs-load"))
        try:
            measured = burst(lab, port, 1000, comm="cs-measured")  # all made before the signal
            t0 = time.monotonic()
            recs = run.stop(signal.SIGTERM)
            stop_s = time.monotonic() - t0
        finally:
            load.kill()
            load.wait()
    assert run.proc.returncode == 0 and stop_s < 15, stop_s
    seen = {r["sport"] for r in recs if r["type"] == "connect" and r["pid"] == measured["pid"]}
    missing = set(measured["sports"]) - seen
    lost = sum(r["count"] for r in recs if r["type"] == "lost")
    assert len(missing) <= lost, (len(missing), lost)
    assert recs[-1]["event"] == "stop"


def test_sighup_changes_a_filter_live(tmp_path, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    p1, p2 = pick_port(), pick_port()
    conf = tmp_path / "connscope.toml"
    conf.write_text(f"[filters]\nports = [{p1}]\n")
    with start(tmp_path, "--config", str(conf)) as run:
        lab.client(p1), lab.client(p2)
        run.wait_for(lambda r: r["type"] == "connect" and r["dport"] == p1)
        conf.write_text(f"[agent]\nbuffer_pages = 1024\n[filters]\nports = [{p2}]\n")
        run.proc.send_signal(signal.SIGHUP)
        [reload] = run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "reload")
        assert reload["applied"] == ["filters.ports"] and reload["restart_required"] == ["agent.buffer_pages"]
        lab.client(p1), lab.client(p2)
        run.wait_for(lambda r: r["type"] == "connect" and r["dport"] == p2)
        # the same file again: nothing to apply, and the restart is still owed
        run.proc.send_signal(signal.SIGHUP)
        [_, again] = run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "reload", count=2)
        assert again["applied"] == [] and again["restart_required"] == ["agent.buffer_pages"]
        conf.write_text("[filters]\nports = [\"not a port\"]\n")
        run.proc.send_signal(signal.SIGHUP)
        [_, _, bad] = run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "reload", count=3)
        assert "filters.ports" in bad["error"] and bad["applied"] == []
        recs = run.stop(signal.SIGTERM)
        assert "configuration not reloaded" in run.stderr()
    conns = [r for r in recs if r["type"] == "connect"]
    cut = reload["seq"]
    assert {r["dport"] for r in conns if r["seq"] < cut} == {p1}
    assert {r["dport"] for r in conns if r["seq"] > cut} == {p2}


def test_sighup_with_socket_scan_0_stops_the_scans(tmp_path, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    conf = tmp_path / "connscope.toml"
    scanning = "[agent]\nwindow = 1\nstatus_interval = 1\nsocket_scan = {}\n[thresholds]\nbacklog_scans = 2\n"
    conf.write_text(scanning.format(0.5))

    def backlog(pid):
        return lambda r: r["type"] == "diagnosis" and r["kind"] == "recv_backlog" and r["pid"] == pid

    with start(tmp_path, "--config", str(conf)) as run:
        first = lab.stalled_pair(pick_port(), "cs-scan-on", nbytes=4 << 20)[1]
        run.wait_for(backlog(first), timeout=20)  # the scans see a stalled reader
        conf.write_text(scanning.format(0))
        run.proc.send_signal(signal.SIGHUP)
        [reload] = run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "reload")
        assert reload["applied"] == ["agent.socket_scan"], reload
        second = lab.stalled_pair(pick_port(), "cs-scan-off", nbytes=4 << 20)[1]
        run.wait_for(lambda r: r["type"] == "summary" and r["pid"] == second, timeout=20)  # it was seen
        # many scans' worth of time (2 in a row raise it at 0.5 s): none ran
        seen = len(run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "status"))
        run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "status", count=seen + 4, timeout=20)
        assert not [r for r in run.records() if backlog(second)(r)]
        run.stop(signal.SIGTERM)


@pytest.mark.parametrize("args,needles", [
    (["--window", "soon"], ["agent.window = 'soon' (--window)", "is not a number"]),
    (["--output", "syslog"], ["agent.output = 'syslog' (--output)", "one of: stdout, kafka"]),
    (["--family", "ipx"], ["filters.family = 'ipx' (--family)", "one of: any, ipv4, ipv6"]),
    (["--config", "/nonexistent/connscope.toml"], ["/nonexistent/connscope.toml does not exist"]),
    (["--threshold", "refusd=1"], ["--threshold", "refused"]),
])
def test_bad_configuration_is_one_line_and_exit_2(args, needles):
    cp = subprocess.run(connscope_argv("run", *args), capture_output=True, text=True, timeout=60, cwd=REPO)
    assert cp.returncode == 2, cp.stderr
    [line] = cp.stderr.strip().splitlines()
    assert line.startswith("connscope: ") and cp.stdout == ""
    for n in needles:
        assert n in line, (n, line)


def test_bad_configuration_file_is_one_line_and_exit_2(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[agent]\nwindw = 3\n")
    cp = subprocess.run(connscope_argv("run", "--config", str(conf)), capture_output=True, text=True,
                        timeout=60, cwd=REPO)
    assert cp.returncode == 2 and cp.stderr.strip() == (
        f"connscope: {conf}: unknown key agent.windw (fix: keys in [agent] are: output, connections, "
        "connection_records, window, "
        "status_interval, socket_scan, cpu_budget, failure_records, queue_max, buffer_pages, strict, force_hooks, state_dir, cmdline, "
        "sensitive_words, prometheus, prometheus_destinations, prometheus_series)")


@pytest.mark.parametrize("text,want", [
    ("[agent\noutput = \"kafka\"\n", "line 1, column 7: unclosed table header `[agent` (fix: close it: `[agent]`)"),
    ("[agent]\nwindow = 5\n[agent\n[filters]\n",
     "line 3, column 7: unclosed table header `[agent` (fix: close it: `[agent]`)"),
    ("[agent]\n[agent]\n", "line 2, column 7: table [agent] is declared twice (fix: fix the syntax there)"),
    ("[agent]\noutput = \"kafka\n", "line 2, column 16: a string is not closed before the end of the line"),
    ("[agent]\noutput = kafka\n", "line 2, column 10: the value is missing or not TOML (text needs quotes)"),
])
def test_toml_syntax_error_names_file_line_and_column(tmp_path, text, want):
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    cp = subprocess.run(connscope_argv("run", "--config", str(conf)), capture_output=True, text=True,
                        timeout=60, cwd=REPO)
    assert cp.returncode == 2, cp.stderr
    [line] = cp.stderr.strip().splitlines()
    assert line.startswith(f"connscope: configuration file {conf}, {want}"), line


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_prometheus_endpoint_serves_the_counters(tmp_path, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    mport, port = pick_port(), pick_port()
    with start(tmp_path, "--prometheus", f"127.0.0.1:{mport}") as run:
        lab.client(port), lab.client(port)
        run.wait_for(lambda r: r["type"] == "connect" and r["dport"] == port, count=2)
        written = [r for r in run.records() if r["type"] == "connect"]  # before the scrape: it can only grow
        m = _scrape(mport)
        assert m['connscope_records_total{type="connect"}'] >= len(written) >= 2
        assert m['connscope_records_total{type="agent"}'] == 1  # the start record
        assert m[f'connscope_hook_info{{hook="lifecycle",method="{probed_method("lifecycle")}"}}'] == 1
        assert m['connscope_lost_total{reason="queue_full",stage="queue"}'] == 0
        assert m["connscope_rss_bytes"] > 10e6 and m["connscope_cpu_seconds_total"] > 0
        assert m["connscope_sampling_keep_one_in"] == 1
        run.stop(signal.SIGTERM)


def test_prometheus_address_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cp = subprocess.run(connscope_argv("run", "--state-dir", str(tmp_path), "--duration", "1",
                                           "--prometheus", f"127.0.0.1:{busy.getsockname()[1]}"),
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert cp.returncode == 2 and "agent.prometheus: cannot listen on" in cp.stderr, cp.stderr


def test_over_budget_samples_connections_and_summaries_stay_exact(tmp_path, netpair, peer_cmd):
    n = 3000
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    lab.server(port, "close")
    with start(tmp_path, "--cpu-budget", "0.01", "--window", "2", "--status-interval", "0") as run:
        # warm up until sampling starts, then measure a burst made entirely under sampling
        warm = lab.pair.popen(lab.pair.client_ns, peer_cmd("burst", "--addr", lab.server_addr, "--port", port,
                                                           "--count", 100000, "--comm", "cs-warm"))
        try:
            [on] = run.wait_for(lambda r: r["type"] == "agent" and r["event"] == "sampling", timeout=30)[:1]
        finally:
            warm.kill()
            warm.wait()
        # one step to the power of two at or above share / budget (service/overload.py)
        want = min(1024, max(2, 1 << math.ceil(math.log2(on["cpu_share"] / 0.01))))
        assert on["active"] and on["keep_one_in"] == want and on["cpu_share"] > on["cpu_budget"] == 0.01
        b = burst(lab, port, n, comm="cs-sampled")
        assert b["ok"] == n
        deadline = time.monotonic() + 15
        while True:
            total = sum(r["connects_ok"] for r in run.records() if r["type"] == "summary" and r["pid"] == b["pid"])
            if total >= n or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        recs = run.stop(signal.SIGTERM)
    kept = [r for r in recs if r["type"] == "connect" and r["pid"] == b["pid"]]
    skipped = skipped_runs(recs)
    assert n - skipped <= total <= n, (total, skipped)
    assert len(kept) < n, "per-connection records were not sampled"
    stop = recs[-1]
    assert stop["sampled_out"] > 0
