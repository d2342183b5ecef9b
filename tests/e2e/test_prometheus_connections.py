"""`connscope run --prometheus`: connection metrics scraped while known connections are made.

Every value is checked against what the test's own clients did (their
errnos), the server's accepts and the client namespace's TIME_WAIT sockets
(`ss`), parsed with prometheus_client's own parser.
"""

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netlab import pick_port, wait_until

from ..agentrun import AgentRun, is_root
from ..kernel.conftest import Lab

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")

WINDOW = 1.0


def scrape(port: int) -> dict:
    """{(sample name, frozenset of labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def samples(m: dict, name: str, **labels) -> dict:
    """Samples of `name` whose labels include `labels`: {labels dict as frozenset: value}."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in m.items() if n == name and want <= lab}


def value(m: dict, name: str, **labels) -> float:
    found = samples(m, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples: {found}"
    return next(iter(found.values()))


def after_windows(port: int, more: int = 2, timeout: float = 30) -> dict:
    """A scrape once `more` windows closed after this call: every close of
    traffic that ended before it is counted (the server's own close comes a
    moment after the client's, so one window is not enough)."""
    start = value(scrape(port), "connscope_metrics_windows_total")
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(port)
        if value(m, "connscope_metrics_windows_total") >= start + more:
            return m
        assert time.monotonic() < deadline, f"fewer than {more} windows closed in {timeout}s"
        time.sleep(0.1)


def agent(tmp_path, mport, *args):
    return AgentRun("--state-dir", str(tmp_path / "state"), "--prometheus", f"127.0.0.1:{mport}",
                    "--window", str(WINDOW), "--status-interval", "0", *args, command=("run",))


def time_wait_sockets(lab, addr: str, port: int) -> int:
    out = lab.pair.run(lab.pair.client_ns, ["ss", "-Htn", "state", "time-wait", "dst", f"{addr}:{port}"]).stdout
    return len(out.splitlines())


def test_connection_metrics_count_known_connections_exactly(tmp_path, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    mport, port, closed = pick_port(), pick_port(), pick_port()
    with agent(tmp_path, mport, "--comm", "cs-prom", "--comm", "cs-prom-srv") as run:
        lab.server(port, "close", "cs-prom-srv")
        ok = lab.client(port, "--count", 5, "--close-first", comm="cs-prom")
        refused = lab.client(closed, "--count", 3, comm="cs-prom")
        assert [a["error"] for a in ok + refused] == [None] * 5 + ["ECONNREFUSED"] * 3
        # A closing client's socket is FIN_WAIT2 until the server's FIN makes it
        # TIME_WAIT: once all five are, one more connection that the server
        # closes first (after its 1 s) makes the gauge's last reading 5 for sure.
        wait_until(lambda: time_wait_sockets(lab, lab.server_addr, port) == 5, 10, "5 TIME_WAIT sockets")
        [last] = lab.client(port, "--count", 1, comm="cs-prom")
        assert last["error"] is None and last["peer_eof"]
        tw = time_wait_sockets(lab, lab.server_addr, port)
        m = after_windows(mport)

        cli = dict(comm="cs-prom", destination=f"{lab.server_addr}:{port}", direction="outbound")
        srv = dict(comm="cs-prom-srv", destination=f"*:{port}", direction="inbound")
        assert value(m, "connscope_connects_total", **cli, result="ok") == 6
        assert value(m, "connscope_connects_total", comm="cs-prom", destination=f"{lab.server_addr}:{closed}",
                     result="ECONNREFUSED") == 3
        assert value(m, "connscope_accepts_total", **srv) == 6
        assert value(m, "connscope_closes_total", **cli) == 6
        assert value(m, "connscope_active_closes_total", **cli) == 5  # the client closed first five times
        assert value(m, "connscope_closes_total", **srv) == 6
        assert value(m, "connscope_active_closes_total", **srv) == 1  # and the server once
        assert tw == 5 and value(m, "connscope_time_wait_sockets", **cli) == tw
        # the handshake histogram: six loopback-fast connects, all under 0.1 s
        assert value(m, "connscope_connect_duration_seconds_count", **cli) == 6
        assert value(m, "connscope_connect_duration_seconds_bucket", **cli, le="0.1") == 6
        assert value(m, "connscope_connect_duration_seconds_bucket", **cli, le="+Inf") == 6
        assert 0 < value(m, "connscope_connect_duration_seconds_sum", **cli) < 0.6
        # the refused destination was diagnosed (connect_refused) once
        assert value(m, "connscope_diagnoses_total", comm="cs-prom", destination=f"{lab.server_addr}:{closed}",
                     kind="connect_refused") == 1
        # nothing here reached a limit
        assert not samples(m, "connscope_metrics_folded_rows_total")
        run.stop()


def test_cardinality_limits_fold_into_other_and_count_the_fold(tmp_path, netpair, peer_cmd):
    """Two destinations per process keep their own series, at most 10 series per metric."""
    lab = Lab(netpair, peer_cmd, "ipv4")
    mport = pick_port()
    ports = [pick_port() for _ in range(3)]
    comms = [f"cs-card{i}" for i in range(9)]
    args = [a for c in comms for a in ("--comm", c)]
    dest = [f"{lab.server_addr}:{p}" for p in ports]

    def refused(n, port, comm):
        tries = lab.client(port, "--count", n, comm=comm)
        assert [a["error"] for a in tries] == ["ECONNREFUSED"] * n

    with agent(tmp_path, mport, "--prometheus-destinations", "2", "--prometheus-series", "10", *args) as run:
        # one process, three destinations: the third is summed into "other"
        for n, port in zip((3, 2, 1), ports):
            refused(n, port, comms[0])
        m = after_windows(mport)
        series = samples(m, "connscope_connects_total", result="ECONNREFUSED")
        assert {dict(k)["destination"]: v for k, v in series.items()} == {dest[0]: 3, dest[1]: 2, "other": 1}
        assert value(m, "connscope_metrics_folded_rows_total", metric="connscope_connects",
                     reason="top_destinations") == 1

        # eight more processes, one series each: seven fit under the limit of 10
        for comm in comms[1:]:
            refused(1, ports[0], comm)
        m = after_windows(mport)
        series = samples(m, "connscope_connects_total", result="ECONNREFUSED")
        assert sum(series.values()) == 6 + 8
        overflow = {k: v for k, v in series.items() if dict(k)["comm"] == "other"}
        assert len(series) == 11 and list(overflow.values()) == [1]
        assert dict(next(iter(overflow)))["destination"] == "other"
        assert value(m, "connscope_metrics_folded_rows_total", metric="connscope_connects",
                     reason="max_series") == 1
        run.stop()
