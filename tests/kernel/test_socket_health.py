"""Close records carry the socket's health: payload bytes, RTT, MSS and the
keepalive and Nagle options, checked against the test's own TCP_INFO."""

import os
import subprocess

import pytest

from netlab import pick_port, wait_json_line

from ..agentrun import AgentRun, is_root
from ..conftest import PYTHON, TESTS_DIR
from .conftest import Lab, match

EXCHANGE = os.path.join(TESTS_DIR, "tools", "exchange.py")
SENT, REPLY = 300_001, 7_000  # odd sizes: neither is a multiple of the MSS

# (close, client options, server options): every flag on one side and off on
# the other, both ways round
CASES = {
    "graceful": ("graceful", ["--keepalive", "--keepidle", "75", "--nodelay"], []),
    "abort": ("abort", [], ["--keepalive", "--nodelay"]),
}


def _exchange(lab, port, close, client_opts, server_opts):
    """Runs one exchange; returns (client info, server info)."""
    pair = lab.pair
    srv = pair.popen(pair.server_ns, [PYTHON, EXCHANGE, "server", "--addr", lab.server_addr, "--port", str(port),
                                      "--expect", str(SENT), "--reply", str(REPLY), "--comm", "cs-hsrv",
                                      *server_opts])
    wait_json_line(srv, lambda j: j["event"] == "listening", timeout=10)
    cli = pair.popen(pair.client_ns, [PYTHON, EXCHANGE, "client", "--addr", lab.server_addr, "--port", str(port),
                                      "--send", str(SENT), "--expect", str(REPLY), "--comm", "cs-hcli",
                                      *(["--abort"] if close == "abort" else []), *client_opts],
                     stdin=subprocess.PIPE)
    client_info = wait_json_line(cli, lambda j: j["event"] == "info", timeout=30)
    server_info = wait_json_line(srv, lambda j: j["event"] == "info", timeout=30)
    # both sides quiet: now the client closes
    cli.stdin.write(b"close\n")
    cli.stdin.flush()
    wait_json_line(cli, lambda j: j["event"] == "closed", timeout=20)
    wait_json_line(srv, lambda j: j["event"] == "closed", timeout=20)
    return client_info, server_info


@pytest.mark.parametrize("case", CASES)
def test_close_records_carry_the_bytes_rtt_mss_and_options_tcp_info_shows(agent, lab, case):
    close, client_opts, server_opts = CASES[case]
    port = pick_port()
    cinfo, sinfo = _exchange(lab, port, close, client_opts, server_opts)

    # The kernel's own counts, as TCP_INFO gives them before close(): the
    # side that sent the SYN counts it as acknowledged, the other does not.
    assert (cinfo["bytes_acked"] - 1, cinfo["bytes_received"]) == (SENT, REPLY), cinfo
    assert (sinfo["bytes_acked"], sinfo["bytes_received"]) == (REPLY, SENT), sinfo

    [out] = agent.wait_for(match(type="close", dport=port, sport=cinfo["sport"], family=lab.family), timeout=20)
    [inb] = agent.wait_for(match(type="close", sport=port, dport=cinfo["sport"], family=lab.family), timeout=20)
    for rec, info, sent, received, opts in ((out, cinfo, SENT, REPLY, client_opts),
                                             (inb, sinfo, REPLY, SENT, server_opts)):
        # payload only: no SYN, no FIN, whichever side closed first
        assert (rec["bytes_sent"], rec["bytes_received"]) == (sent, received), rec
        assert rec["mss"] == info["snd_mss"], (rec, info)
        assert rec["keepalive"] is ("--keepalive" in opts), rec
        assert rec["keepalive_idle_s"] == (75 if "--keepidle" in opts else None), rec
        assert rec["nodelay"] is ("--nodelay" in opts), rec
        if close == "abort":
            # an RST ends it: no packet after TCP_INFO was read, so no new RTT sample
            assert (rec["srtt_us"], rec["min_rtt_us"]) == (info["rtt_us"], info["min_rtt_us"]), (rec, info)
        else:
            # the FIN exchange adds RTT samples: the minimum can only fall
            assert 0 < rec["min_rtt_us"] <= info["min_rtt_us"] and rec["srtt_us"] > 0, (rec, info)
    assert (out["closed_by"], inb["closed_by"]) == (("reset", "reset") if close == "abort" else ("local", "peer"))


def test_the_start_record_reports_the_health_reads(agent):
    [start] = [r for r in agent.records() if r["type"] == "agent" and r["event"] == "start"]
    health = start["hooks"]["socket_health"]
    assert (health["state"], health["method"]) == ("active", "btf_offsets"), health
    assert "limits" not in health, health  # this kernel's BTF has every field


@pytest.fixture(scope="module")
def summaries():
    if not is_root():
        pytest.skip("needs root (loads eBPF programs)")
    run = AgentRun("--summary", "--window", "2")
    try:
        yield run
        run.stop()
    finally:
        run.close()


def test_summaries_sum_the_bytes_and_give_rtt_percentiles(summaries, netpair, peer_cmd):
    lab = Lab(netpair, peer_cmd, "ipv4")
    port = pick_port()
    cinfo, sinfo = _exchange(lab, port, "graceful", [], [])
    cpid, spid = cinfo["pid"], sinfo["pid"]
    assert summaries.summed(cpid, "bytes_sent", SENT, timeout=12.0) == SENT
    assert summaries.summed(cpid, "bytes_received", REPLY, timeout=12.0) == REPLY
    assert summaries.summed(spid, "bytes_sent", REPLY, timeout=12.0) == REPLY
    assert summaries.summed(spid, "bytes_received", SENT, timeout=12.0) == SENT
    [crow] = [r for r in summaries.records() if r["type"] == "summary" and r["pid"] == cpid and r["closes"]]
    assert crow["rtt_us"]["p50"] is not None and crow["rtt_sketch"]["mapping"], crow
    [dest] = crow["top_destinations"]
    assert (dest["dport"], dest["bytes_sent"], dest["bytes_received"]) == (port, SENT, REPLY), dest
    assert dest["rtt_us"]["p50"] == crow["rtt_us"]["p50"]
