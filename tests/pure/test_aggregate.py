"""Window aggregates, mergeable sketches and diagnoses, on hand-made events."""

import socket

from agent.aggregate import sketch
from agent.aggregate.diagnose import Diagnoser, DiagnosisThresholds
from agent.aggregate.window import WindowAggregator
from agent.decode import layout as L
from agent.records.aggregates import diagnosis_record, summary_records
from agent.records.build import RecordBuilder

from ..schema import assert_valid
from .factories import event

S = 1_000_000_000


def _conn(t_ns, latency_us, life_us, dport=8080, err=0):
    """A client connection started at t_ns: its connect record and (if ok) its close."""
    if err:
        return [event(start_ns=t_ns, established_ns=0, end_ns=t_ns + latency_us * 1000, err=err, flags=0,
                      dport=dport)]
    est = t_ns + latency_us * 1000
    return [event(start_ns=t_ns, established_ns=est, dport=dport),
            event(type=L.EV_CLOSE, start_ns=t_ns, established_ns=est, end_ns=est + life_us * 1000,
                  flags=L.F_ESTABLISHED | L.F_TIME_WAIT, closed_by=L.CLOSED_BY_LOCAL, dport=dport)]


def _records(result):
    b = RecordBuilder(host="h")
    recs = summary_records(b, result)
    for r in recs:
        r["seq"] = 1
        assert_valid(r)
    return recs


def test_counts_rates_and_percentiles():
    agg = WindowAggregator(10, start_ns=0)
    for i in range(100):
        for ev in _conn(i * S // 10, latency_us=100 + i, life_us=2000):
            agg.add(ev)
    for ev in _conn(5 * S, latency_us=50, life_us=0, dport=9, err=111) * 3:
        agg.add(ev)
    [r] = _records(agg.close(10 * S))
    assert (r["connects_ok"], r["connects_failed"], r["failures"]) == (100, 3, {"ECONNREFUSED": 3})
    assert (r["closes"], r["active_closes"], r["short_lived_share"]) == (100, 100, 1.0)
    assert r["new_connections_per_s"] == 10.3
    assert abs(r["connect_latency_us"]["p50"] - 150) <= 2 and r["connect_latency_us"]["max"] == 199
    assert [d["dport"] for d in r["top_destinations"]] == [8080, 9]
    assert r["top_destinations"][1]["failures"] == {"ECONNREFUSED": 3}


def test_two_windows_merged_equal_one_window_over_both():
    # (i + 1): a start time of 0 means "unknown" to the kernel side
    events = [ev for i in range(400) for ev in _conn((i + 1) * S // 20, latency_us=37 + (i * 7919) % 5000,
                                                     life_us=(i * 104729) % 3_000_000)]
    one = WindowAggregator(20, start_ns=0)
    halves = [WindowAggregator(10, start_ns=0), WindowAggregator(10, start_ns=10 * S)]
    for ev in events:
        one.add(ev)
        halves[0 if ev.start_ns <= 10 * S else 1].add(ev)
    [whole] = _records(one.close(20 * S))
    parts = [_records(h.close((i + 1) * 10 * S))[0] for i, h in enumerate(halves)]
    for field in ("connect_latency_sketch", "lifetime_sketch"):
        merged = sketch.from_json(parts[0][field])
        merged.merge(sketch.from_json(parts[1][field]))
        single = sketch.from_json(whole[field])
        assert merged.count == single.count == 400
        # bins add exactly, so the merged sketch is the one-window sketch
        assert _bins(sketch.to_json(merged)) == _bins(sketch.to_json(single))
        for q in (0.5, 0.9, 0.99):
            assert merged.get_quantile_value(q) == single.get_quantile_value(q)


def _bins(data):
    """Non-zero bins by index (the dense array's start depends on allocation)."""
    store = data["positiveValues"]
    off = store.get("contiguousBinIndexOffset", 0)
    return {off + i: c for i, c in enumerate(store.get("contiguousBinCounts", [])) if c}, data.get("zeroCount", 0)


def test_diagnoses_are_raised_once_and_cleared_once():
    d = Diagnoser(DiagnosisThresholds(churn_per_s=5))
    b = RecordBuilder(host="h")
    kinds = []
    for w, burst in enumerate([True, True, False]):
        agg = WindowAggregator(1, start_ns=w * S)
        if burst:
            for i in range(10):
                for ev in _conn(w * S + i * S // 10, 100, 500):
                    agg.add(ev)
                agg.add(_conn(w * S, 100, 0, dport=9, err=111)[0])
        result = agg.close((w + 1) * S)
        for f in d.evaluate(result):
            rec = diagnosis_record(b, result, f)
            rec["seq"] = 1
            assert_valid(rec)
            kinds.append((w, rec["kind"], rec["state"], rec["dport"]))
    assert kinds == [(0, "connection_churn", "raised", 8080), (0, "connect_refused", "raised", 9),
                     (2, "connection_churn", "cleared", 8080), (2, "connect_refused", "cleared", 9)]


def test_pooled_connection_is_not_churn():
    agg = WindowAggregator(10, start_ns=0)
    for ev in _conn(0, 100, 10_000_000):
        agg.add(ev)
    assert Diagnoser().evaluate(agg.close(10 * S)) == []


def test_threshold_overrides_reach_the_rules():
    from agent.cli.options import parse_thresholds

    from agent.config.load import from_values

    values = parse_thresholds(None, None, ["churn_per_s=1000", "short_lifetime_us=5", "refused=2"])
    cfg = from_values(values)
    t = cfg.diagnosis_thresholds()
    assert (t.churn_per_s, t.refused, cfg.window_thresholds().short_lifetime_us) == (1000.0, 2, 5)
    assert t.timeouts == 1  # untouched defaults stay
    agg = WindowAggregator(1, start_ns=0)
    for i in range(50):
        for ev in _conn(1 + i * S // 50, 100, 500):
            agg.add(ev)
    agg.add(_conn(1, 100, 0, dport=9, err=111)[0])
    assert Diagnoser(t).evaluate(agg.close(S)) == []  # 50/s < 1000/s, and 1 refusal < 2


def _row(pid=4242, port=8080, latency=(), lifetime=(), **counts):
    from agent.decode.aggregates import KernelRow
    from agent.decode.ddbins import RELATIVE_ACCURACY, key_of

    def bins(values_ns):
        out = {}
        for v in values_ns:
            out[key_of(v, RELATIVE_ACCURACY)] = out.get(key_of(v, RELATIVE_ACCURACY), 0) + 1
        return out

    c = dict.fromkeys(L.AGG_COUNT_FIELDS, 0)
    c.update(counts)
    c["connects_ok"] = c["connects_ok"] or len(latency)
    c["latency_max_ns"] = max(latency, default=0)
    return KernelRow(pid=pid, comm="cs-peer", cgroup_id=1, family=socket.AF_INET, direction=L.DIR_OUTBOUND,
                     daddr="169.254.1.2", port=port, counts=c, latency=bins(latency), lifetime=bins(lifetime),
                     failures={111: counts.get("connects_failed", 0)} if counts.get("connects_failed") else {})


def test_kernel_rows_of_two_windows_merged_equal_one_window():
    """The kernel's rows of two windows, merged through their sketches and
    counts, give what one window over both gives."""
    lat = [37_000 + (i * 7919) % 5_000_000 for i in range(400)]
    life = [(i * 104729) % 3_000_000_000 + 1 for i in range(400)]
    one = WindowAggregator(20, start_ns=0)
    one.add_kernel([_row(latency=lat, lifetime=life, closes=400, connects_failed=3)])
    halves = [WindowAggregator(10, start_ns=0), WindowAggregator(10, start_ns=10 * S)]
    halves[0].add_kernel([_row(latency=lat[:150], lifetime=life[:150], closes=150, connects_failed=1)])
    halves[1].add_kernel([_row(latency=lat[150:], lifetime=life[150:], closes=250, connects_failed=2)])
    [whole] = _records(one.close(20 * S))
    parts = [_records(h.close((i + 1) * 10 * S))[0] for i, h in enumerate(halves)]
    for name in ("connect_latency_sketch", "lifetime_sketch"):
        merged = sketch.from_json(parts[0][name])
        merged.merge(sketch.from_json(parts[1][name]))
        assert sketch.percentiles(merged) == sketch.percentiles(sketch.from_json(whole[name]))
        assert merged.count == 400
    for field in ("connects_ok", "connects_failed", "closes"):
        assert parts[0][field] + parts[1][field] == whole[field]
    assert whole["failures"] == {"ECONNREFUSED": 3} and whole["counts_from"] == "kernel"
    assert whole["connect_latency_us"]["max"] == max(lat) // 1000


def test_a_connect_without_handshake_time_is_counted_untimed_not_sketched():
    """A connect whose ESTABLISHED transition the kernel skipped arrives late,
    flagged incomplete, with no established time: it counts as ok and as
    untimed, and stays out of the latency sketch."""
    agg = WindowAggregator(10, start_ns=0)
    for ev in _conn(S, latency_us=100, life_us=10):
        agg.add(ev)
    agg.add(event(start_ns=2 * S, established_ns=0, flags=L.F_ESTABLISHED | L.F_INCOMPLETE))
    [r] = _records(agg.close(10 * S))
    assert (r["connects_ok"], r["connects_untimed"]) == (2, 1)
    assert sketch.from_json(r["connect_latency_sketch"]).count == 1


def test_a_pre_fork_servers_workers_are_diagnosed_together_on_the_listening_port():
    """The parent listens (its row has the accepts), each worker writes with
    Nagle on (its row has holds) under one command and cgroup: no worker
    alone reaches the threshold, the command does, on the listening port."""
    from agent.decode.aggregates import KernelRow

    def inbound(pid, **counts):
        c = dict.fromkeys(L.AGG_COUNT_FIELDS, 0)
        c.update(counts)
        return KernelRow(pid=pid, comm="srv", cgroup_id=7, family=socket.AF_INET, direction=L.DIR_INBOUND,
                         daddr="*", port=8080, counts=c)

    agg = WindowAggregator(10, start_ns=0)
    agg.add_kernel([inbound(100, accepts=30), inbound(101, nagle_holds=6), inbound(102, nagle_holds=6)])
    findings = Diagnoser(DiagnosisThresholds(nagle_holds=10)).evaluate(agg.close(10 * S))
    [f] = [f for f in findings if f.kind == "nagle_delay"]
    assert (f.scope, f.proc, f.dest) == ("command", (0, "srv", 7), ("*", 8080, "inbound"))
    assert (f.evidence["nagle_holds"], f.evidence["processes"]) == (12, 3)
