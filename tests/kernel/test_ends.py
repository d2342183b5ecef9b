"""`trace --ends`: one record per connection end, and every failed attempt."""

import pytest

from netlab import pick_port

from ..agentrun import AgentRun, is_root
from .conftest import match

CONNECTIONS = 20


@pytest.fixture(scope="module")
def ends_agent():
    if not is_root():
        pytest.skip("needs root (loads eBPF programs)")
    run = AgentRun("--ends")
    try:
        yield run
        run.stop()
    finally:
        run.close()


def test_one_close_per_end_with_the_connect_latency_and_every_failure(ends_agent, lab):
    port, closed_port = pick_port(), pick_port()
    lab.server(port, mode="close", comm="cs-srv")
    conns = lab.client(port, "--count", CONNECTIONS, "--send", 10, "--close-first", comm="cs-cli")
    [refused] = lab.client(closed_port, comm="cs-cli")
    assert len(conns) == CONNECTIONS and all(c["errno"] == 0 for c in conns) and refused["errno"] == 111
    sports = {c["sport"] for c in conns}

    outs = ends_agent.wait_for(lambda r: r["type"] == "close" and r["dport"] == port and r["sport"] in sports,
                               count=CONNECTIONS, timeout=30)
    ins = ends_agent.wait_for(lambda r: r["type"] == "close" and r["sport"] == port and r["dport"] in sports,
                              count=CONNECTIONS, timeout=30)
    [failed] = ends_agent.wait_for(match(type="connect", dport=closed_port, family=lab.family), timeout=20)
    assert (failed["result"], failed["error"], failed["pid"]) == ("error", "ECONNREFUSED", refused["pid"])

    assert {r["sport"] for r in outs} == sports and {r["dport"] for r in ins} == sports
    for r in outs + ins:
        assert r["connect_latency_us"] is not None and 0 <= r["connect_latency_us"] < 1_000_000, r
        assert (r["syn_retransmits"], r["synack_retransmits"]) == (0, 0)
    assert {r["direction"] for r in outs} == {"outbound"} and {r["direction"] for r in ins} == {"inbound"}
    assert {r["comm"] for r in outs} == {"cs-cli"} and {r["comm"] for r in ins} == {"cs-srv"}

    # Nothing else about these connections: no connect or accept record, one
    # close per end. The agent's first record per process may be an accept
    # or connect (it names the process): it is dropped before the sink too.
    mine = [r for r in ends_agent.records()
            if r["type"] in ("connect", "accept", "close") and port in (r.get("sport"), r.get("dport"))]
    assert sorted(r["type"] for r in mine) == ["close"] * (2 * CONNECTIONS)
