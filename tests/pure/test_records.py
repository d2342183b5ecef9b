import socket

import pytest

from agent.decode import layout as L
from agent.records.build import RecordBuilder, format_addr
from agent.records.clock import WallClock, format_wall_ns

from ..schema import assert_valid
from .factories import event


@pytest.fixture
def builder():
    return RecordBuilder(host="h1")


def built(builder, **kw):
    rec = builder.from_event(event(**kw))
    rec["seq"] = 1
    assert_valid(rec)
    return rec


def test_connect_ok(builder):
    r = built(builder)
    assert r["type"] == "connect" and r["result"] == "ok" and r["errno"] == 0 and r["error"] is None
    assert (r["saddr"], r["sport"], r["daddr"], r["dport"]) == ("169.254.7.1", 40000, "169.254.7.2", 8080)
    assert r["latency_us"] == 250
    assert (r["pid"], r["comm"], r["pid_source"], r["host"]) == (4242, "curl", "connect", "h1")


def test_connect_refused_latency_runs_to_the_failure(builder):
    r = built(builder, err=111, flags=0, established_ns=0, end_ns=1_000_400_000, resets_received=1)
    assert (r["result"], r["errno"], r["error"], r["latency_us"]) == ("error", 111, "ECONNREFUSED", 400)
    assert r["resets_received"] == 1


def test_connect_abandoned_is_an_error_without_errno(builder):
    r = built(builder, err=0, flags=L.F_ABORTED, established_ns=0, end_ns=1_000_100_000)
    assert (r["result"], r["errno"], r["error"]) == ("error", 0, "ABORTED")


def test_syscall_only_failure_has_no_source_port(builder):
    r = built(builder, err=99, flags=L.F_SYSCALL_ONLY, established_ns=0, end_ns=1_000_010_000, sport=0,
              saddr=bytes(16), pid_source=L.PID_SRC_SYSCALL)
    assert (r["error"], r["sport"], r["saddr"], r["syscall_only"], r["pid_source"]) == (
        "EADDRNOTAVAIL", 0, "0.0.0.0", True, "syscall")


def test_accept_and_close_ipv6(builder):
    v6 = dict(family=socket.AF_INET6, saddr=socket.inet_pton(socket.AF_INET6, "fd00:7::2"),
              daddr=socket.inet_pton(socket.AF_INET6, "fd00:7::1"))
    a = built(builder, type=L.EV_ACCEPT, direction=L.DIR_INBOUND, pid_source=L.PID_SRC_LISTENER,
              synack_retransmits=2, **v6)
    assert (a["family"], a["saddr"], a["daddr"], a["synack_retransmits"]) == ("ipv6", "fd00:7::2", "fd00:7::1", 2)
    c = built(builder, type=L.EV_CLOSE, direction=L.DIR_INBOUND, end_ns=3_000_250_000,
              closed_by=L.CLOSED_BY_RESET, err=104, resets_received=1, **v6)
    assert (c["direction"], c["duration_us"], c["closed_by"], c["error"]) == ("inbound", 2_000_000, "reset", "ECONNRESET")


def test_close_of_a_connection_older_than_the_agent(builder):
    c = built(builder, type=L.EV_CLOSE, flags=L.F_PREEXISTING | L.F_ESTABLISHED | L.F_TIME_WAIT,
              established_ns=0, start_ns=0, end_ns=5, closed_by=L.CLOSED_BY_LOCAL, pid_source=L.PID_SRC_CLOSE)
    assert (c["duration_us"], c["preexisting"], c["time_wait"], c["pid_source"]) == (None, True, True, "close")


def test_agent_and_lost_records_validate(builder):
    for rec in (builder.agent_record("start", version="x", kernel="k", hooks={}),
                builder.lost_record(7, "kernel", "buffer_full")):
        rec["seq"] = 3
        assert_valid(rec)


def test_v4_mapped_address_formats_as_ipv6():
    raw = socket.inet_pton(socket.AF_INET6, "::ffff:169.254.1.2")
    assert format_addr(socket.AF_INET6, raw) == "::ffff:169.254.1.2"


def test_timestamps_are_rfc3339_utc_micro():
    assert format_wall_ns(1_795_000_000_123_456_789) == "2026-11-18T11:06:40.123456Z"
    c = WallClock()
    assert c.rfc3339(10**9).endswith("Z") and len(c.rfc3339(10**9)) == 27
