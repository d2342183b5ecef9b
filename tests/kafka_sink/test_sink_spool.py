"""The spool under the Kafka sink: a full spool's drops reported exactly, a
SIGKILL mid-outage, a damaged segment."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson

from agent.sinks.kafka import KafkaSink
from agent.sinks.spool import MAGIC, Spool

from .sinkkit import Feeder, check_delivered, settings_for, wait_for

REPO = Path(__file__).resolve().parents[2]


def _drained(sink, feeder=None):
    if feeder is not None:
        feeder.flush()  # as the pipeline does: losses become lost records as they are known
    s = sink.stats()
    return s["spool_bytes"] == 0 and s["in_flight_records"] == 0 and s["state"] == "delivering" and s


def test_full_spool_drops_are_reported_exactly_in_a_delivered_lost_record(mock_cluster, tmp_path):
    mock_cluster.create_topic("connscope", 4)
    mock_cluster.broker_down(1)
    sink = KafkaSink(settings_for(mock_cluster, spool_max_bytes=64 << 10, flush_timeout_s=1), str(tmp_path))
    feeder = Feeder(sink, pids=16)
    try:
        for _ in range(6):
            feeder.write(100)
        dropped = sink.stats()["dropped"]
        assert dropped > 300 and feeder.lost_reports  # 64 KiB holds ~130 of these records
        mock_cluster.broker_up(1)
        stats = wait_for(lambda: _drained(sink, feeder), 60, "the spool to drain")
    finally:
        sink.close()
    assert stats["dropped"] == dropped
    got = check_delivered(mock_cluster, "connscope", 4, feeder.sent, complete=False)
    missing = set(feeder.sent) - set(got)
    lost = [r for r in got.values() if r["type"] == "lost"]
    assert len(lost) == len(feeder.lost_reports) >= 1  # every report of a loss was delivered
    assert all(r["stage"] == "sink" and r["reason"] == "spool_full" for r in lost)
    assert sum(r["count"] for r in lost) == len(missing) == dropped
    assert all(orjson.loads(feeder.sent[k])["type"] != "lost" for k in missing)
    # each lost record names the seqs it covers: together they hold every missing one
    assert all(any(r["seq_first"] <= seq <= r["seq_last"] for r in lost) for _run, seq in missing)


_CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    from agent.sinks.kafka import KafkaSink
    from kafka_sink.sinkkit import Feeder, settings_for, wait_for

    class Cluster:
        bootstrap = sys.argv[1]

    sink = KafkaSink(settings_for(Cluster, max_in_flight_bytes=65536, batch_size=16384), sys.argv[2])
    feeder = Feeder(sink, pids=32)
    feeder.write(2000)
    wait_for(lambda: sink.stats()["acked"] >= 2000, 30, "acks")
    print("acked", flush=True)
    sys.stdin.readline()  # the parent took the broker down
    for _ in range(50):
        feeder.write(100)
    def routed(s=None):
        s = sink.stats()
        return s["acked"] + s["in_flight_records"] + s["spooled"] - s["replayed"] == 7000
    wait_for(routed, 30, "every record acknowledged, in flight or spooled")
    with open(sys.argv[3], "w") as f:
        json.dump([[k[0], k[1], v.decode()] for k, v in feeder.sent.items()], f)
    print(json.dumps(sink.stats()), flush=True)
    time.sleep(600)
""")


def test_sigkill_mid_outage_then_restart_delivers_what_the_spool_held(mock_cluster, tmp_path):
    mock_cluster.create_topic("connscope", 4)
    spool_dir, sent_file = tmp_path / "spool", tmp_path / "sent.json"
    code = _CHILD.format(repo=str(REPO), tests=str(REPO / "tests"))
    child = subprocess.Popen([sys.executable, "-c", code, mock_cluster.bootstrap, str(spool_dir), str(sent_file)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout.readline().strip() == "acked"
        mock_cluster.broker_down(1)
        child.stdin.write("go\n")
        child.stdin.flush()
        at_kill = json.loads(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    sent = {(r, s): v.encode() for r, s, v in json.loads(sent_file.read_text())}
    assert len(sent) == 7000
    held = []
    for part in ("retry", "backlog"):
        sp = Spool(str(spool_dir / part), max_bytes=1 << 30)
        items, _ = sp.read(100_000)
        held += items
        sp.close()
    assert len(held) == at_kill["spooled"] - at_kill["replayed"] > 4000
    assert at_kill["acked"] + at_kill["in_flight_records"] + len(held) == 7000

    mock_cluster.broker_up(1)
    sink = KafkaSink(settings_for(mock_cluster), str(spool_dir))  # the restart: same spool
    try:
        stats = wait_for(lambda: _drained(sink), 60, "the restarted sink to drain the spool")
    finally:
        sink.close()
    assert stats["replayed"] == len(held) and stats["corrupt_skipped"] == 0
    got = check_delivered(mock_cluster, "connscope", 4, sent, complete=False)
    delivered = {orjson.dumps(r) for r in got.values()}
    assert set(held) <= delivered  # everything the spool held arrived
    assert all(k in got for k in sent if k[1] <= 2000)  # and what was acknowledged before the outage
    # only records in kafka-python's memory at the kill can be missing
    assert len(set(sent) - set(got)) <= at_kill["in_flight_records"]


def test_damaged_spool_segment_is_skipped_with_a_warning_and_the_rest_delivered(mock_cluster, tmp_path, capfd):
    mock_cluster.create_topic("connscope", 8)
    mock_cluster.broker_down(1)
    first = KafkaSink(settings_for(mock_cluster, flush_timeout_s=0.5), str(tmp_path))
    writer = Feeder(first, pids=64)
    try:
        for _ in range(200):
            writer.write(100)  # ~10 MB: more than one 8 MiB segment
        wait_for(lambda: first.stats()["spooled"] >= 20000, 30, "everything spooled")
    finally:
        first.close()
    segs = sorted((tmp_path / "backlog").glob("seg-*.log"))
    assert len(segs) >= 2
    frames = _frames(segs[0].read_bytes())
    victim = len(frames) // 2
    offset, payload = frames[victim]
    with open(segs[0], "r+b") as f:  # flip one byte in the middle of one record
        f.seek(offset + 12 + len(payload) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    lost_part = {p for _, p in frames[victim:]}  # the damaged record and the rest of its segment
    capfd.readouterr()

    mock_cluster.broker_up(1)
    second = KafkaSink(settings_for(mock_cluster), str(tmp_path))
    reporter = Feeder(second, pids=4, run_id="fedcba9876543210fedcba9876543210")
    try:
        stats = wait_for(lambda: _drained(second, reporter), 60, "the spool to drain")
    finally:
        second.close()
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "damaged" in line]
    assert len(warnings) == 1 and warnings[0].startswith("connscope: kafka: skipped the damaged rest"), err
    assert stats["corrupt_skipped"] == 1
    assert [(r["count"], r["reason"]) for r in reporter.lost_reports] == [(1, "spool_corrupt")]
    got = check_delivered(mock_cluster, "connscope", 8, {**writer.sent, **reporter.sent}, complete=False,
                          validate_every=200)
    delivered = {orjson.dumps(r) for r in got.values()}
    assert delivered == (set(writer.sent.values()) - lost_part) | set(reporter.sent.values())


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, payload) of each frame of a spool segment."""
    out, off = [], 0
    while off < len(data):
        magic, n, _ = struct.unpack_from("<III", data, off)
        assert magic == MAGIC
        out.append((off, data[off + 12:off + 12 + n]))
        off += 12 + n
    return out
