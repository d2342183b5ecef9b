"""decode/finalize.py must give the record resolve() in bpf/emit.c would give."""

from agent.decode import layout as L
from agent.decode.finalize import finalize
from agent.records.build import RecordBuilder

from ..schema import assert_valid
from .factories import event


def _rec(ev):
    r = RecordBuilder(host="h").from_event(ev)
    r["seq"] = 1
    assert_valid(r)
    return r


def test_closed_socket_becomes_a_close_record():
    st = event(type=0, flags=L.F_ESTABLISHED | L.F_CLOSING | L.F_TIME_WAIT, closed_by=L.CLOSED_BY_LOCAL,
               end_ns=1_500_000_000)
    ev = finalize(st, now_ns=9_000_000_000)
    assert (ev.type, ev.ts_ns, ev.end_ns) == (L.EV_CLOSE, 9_000_000_000, 1_500_000_000)
    r = _rec(ev)
    assert (r["closed_by"], r["time_wait"], r["duration_us"]) == ("local", True, 499_750)


def test_reset_without_fin_is_closed_by_reset_and_error_clears_time_wait():
    st = event(type=0, flags=L.F_ESTABLISHED | L.F_CLOSING | L.F_TIME_WAIT, resets_sent=1, err=104, end_ns=5)
    r = _rec(finalize(st, now_ns=10))
    assert (r["closed_by"], r["time_wait"], r["error"]) == ("reset", False, "ECONNRESET")


def test_never_established_outbound_is_a_failed_connect():
    st = event(type=0, flags=L.F_CLOSING, established_ns=0, end_ns=1_000_300_000)
    r = _rec(finalize(st, now_ns=2_000_000_000))
    assert (r["type"], r["result"], r["error"], r["latency_us"]) == ("connect", "error", "ABORTED", 300)
