"""The fleet consumer's parts without a broker: the seq ledger and the window merge."""

import random

from agent.aggregate import sketch
from agent.fleet.ledger import Ledger
from agent.fleet.merge import FleetWindows
from agent.fleet.records import FleetRecords
from agent.records.build import RecordBuilder
from tests.schema import assert_valid


def test_duplicates_are_dropped_in_any_order_and_gaps_are_exact():
    led = Ledger(grace_s=0)
    seqs = [s for s in range(1, 101) if s not in (40, 41, 42, 77)]
    order = seqs + random.Random(7).sample(seqs, 30)  # 30 replayed
    random.Random(8).shuffle(order)
    new = [s for s in order if led.seen("h", "r", s)]
    assert sorted(new) == seqs and led.duplicates == 30
    gaps = led.settle(now=0.0)
    assert [(g.first, g.last, g.missing, g.explained) for g in gaps] == [(40, 42, 3, False), (77, 77, 1, False)]
    assert led.settle(now=1.0) == []  # each gap once


def test_past_max_runs_the_least_recently_seen_run_is_forgotten():
    led = Ledger(max_runs=2)
    led.seen("a", "r", 1), led.seen("b", "r", 1)
    led.seen("a", "r", 2)  # in order: a is now the more recent one
    led.seen("c", "r", 1)
    assert list(led.runs) == [("a", "r"), ("c", "r")] and led.runs_dropped == 1


def test_a_gap_waits_for_its_grace_and_a_late_record_is_counted():
    led = Ledger(grace_s=10)
    for s in (1, 2, 4):
        led.seen("h", "r", s)
    assert led.settle(now=100.0) == []
    assert [(g.first, g.last) for g in led.settle(now=110.0)] == [(3, 3)]
    assert led.seen("h", "r", 3) and led.late == 1


def test_lost_records_explain_the_gaps_they_cover_and_counts_without_seqs():
    led = Ledger(grace_s=0)
    for s in [*range(1, 10), *range(20, 30), *range(35, 40)]:
        led.seen("h", "r", s)
    led.note_lost("h", "r", {"seq": 25, "count": 10, "reason": "spool_full", "seq_first": 10, "seq_last": 19})
    led.note_lost("h", "r", {"seq": 36, "count": 5, "reason": "spool_corrupt", "seq_first": None, "seq_last": None})
    gaps = led.settle(now=0.0)
    assert [(g.first, g.last, g.explained, [x.reason for x in g.explained_by]) for g in gaps] == [
        (10, 19, True, ["spool_full"]), (30, 34, True, ["spool_corrupt"])]


def test_a_lost_record_does_not_explain_a_gap_outside_its_seqs():
    led = Ledger(grace_s=0)
    for s in (1, 2, 3, 6, 7):
        led.seen("h", "r", s)
    led.note_lost("h", "r", {"seq": 7, "count": 1, "reason": "spool_full", "seq_first": 5, "seq_last": 5})
    [gap] = led.settle(now=0.0)
    assert (gap.first, gap.last, gap.explained) == (4, 5, False)


def _summary(host, comm, end, ok, failed, latencies, dests=()):
    sk = sketch.new()
    for v in latencies:
        sk.add(v)
    return {"type": "summary", "host": host, "comm": comm, "unit": "api.service", "window_end": end,
            "connects_ok": ok, "connects_failed": failed, "accepts": 0, "closes": ok, "active_closes": ok,
            "retransmits": 1, "failures": {"ECONNREFUSED": failed} if failed else {},
            "connect_latency_sketch": sketch.to_json(sk), "top_destinations": list(dests), "kernel_lost": 0}


def _dest(daddr, failures, tw=None, usable=None):
    return {"daddr": daddr, "dport": 5432, "direction": "outbound", "failures": failures, "time_wait": tw,
            "usable_ports": usable}


def test_windows_add_counts_merge_sketches_exactly_and_count_hosts_per_failing_destination():
    rng = random.Random(3)
    lat_a = [rng.uniform(100, 900) for _ in range(300)]
    lat_b = [rng.uniform(2000, 9000) for _ in range(100)]
    fw = FleetWindows(window_s=60)
    end = "2026-11-28T10:00:30.000000Z"
    fw.add_summary(_summary("a", "api", end, 300, 2, lat_a, [_dest("10.0.1.5", {"ECONNREFUSED": 2}, 100, 1000)]))
    fw.add_summary(_summary("b", "api", end, 100, 5, lat_b, [_dest("10.0.1.5", {"ECONNREFUSED": 5}, 900, 1000)]))
    fw.add_summary(_summary("b", "api", "2026-11-28T10:01:30.000000Z", 1, 0, [5]))  # the next window
    [w] = [FleetRecords(RecordBuilder(host="consumer"), top=5).window(b) for b in fw.due(fw.watermark, 30)]
    assert_valid({**w, "seq": 1})
    assert (w["window_start"], w["window_end"], w["hosts"]) == ("2026-11-28T10:00:00.000000Z",
                                                                 "2026-11-28T10:01:00.000000Z", 2)
    [p] = w["top_by_churn"]
    assert (p["comm"], p["unit"], p["hosts"], p["connects_ok"], p["connects_failed"]) == ("api", "api.service", 2,
                                                                                           400, 7)
    one = sketch.new()
    for v in lat_a + lat_b:
        one.add(v)
    assert p["connect_latency_us"] == sketch.percentiles(one)  # bins add: the same as one sketch
    [f] = w["failing_destinations"]
    assert (f["daddr"], f["error"], f["hosts"], f["attempts"], f["host_names"]) == (
        "10.0.1.5", "ECONNREFUSED", 2, 7, ["a", "b"])
    assert [(x["host"], x["used_share"]) for x in w["port_pressure"]] == [("b", 0.9), ("a", 0.1)]
    assert len(fw.buckets) == 1  # the next window waits
    fw.add_summary(_summary("c", "api", end, 1, 0, [5]))
    assert fw.late == 1  # its window was reported already
