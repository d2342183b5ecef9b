"""The Kafka sink against a real broker (Tansu): every record back intact, in order per key, per codec.

Records are built by the agent's RecordBuilder from connect/accept/close
events, numbered per host as the pipeline numbers them, and every consumed
value is checked against schema v1 and byte-for-byte against the stdout JSON.
"""

from __future__ import annotations

import socket
import time
from collections import defaultdict

import orjson
import pytest

from agent.decode import layout as L
from agent.decode.events import ConnEvent
from agent.records.build import RecordBuilder
from agent.sinks.kafka import KafkaSettings, KafkaSink, probe

from ..schema import assert_valid
from .tansu import consume_to_end, unique_topic

CODECS = ["none", "gzip", "lz4", "zstd", "snappy"]
HOSTS = ("node-a", "node-b", "node-c")


def conn_events(n: int, pid_base: int = 4000):
    """``n`` kernel events cycling connect, accept, close, failed connect; varied pids and ports."""
    v4 = lambda a: socket.inet_pton(socket.AF_INET, a) + bytes(12)  # noqa: E731
    kinds = [
        dict(type=L.EV_CONNECT, flags=L.F_ESTABLISHED, err=0),
        dict(type=L.EV_ACCEPT, flags=L.F_ESTABLISHED, err=0, pid_source=L.PID_SRC_LISTENER,
             direction=L.DIR_INBOUND),
        dict(type=L.EV_CLOSE, flags=L.F_ESTABLISHED | L.F_TIME_WAIT, err=0, end_ns=1_900_000_000,
             closed_by=L.CLOSED_BY_LOCAL, retransmits=2),
        dict(type=L.EV_CONNECT, flags=0, err=111, end_ns=1_000_300_000, resets_received=1),
    ]
    for i in range(n):
        kw = dict(
            ts_ns=2_000_000_000 + i * 1000, start_ns=1_000_000_000, established_ns=1_000_250_000, end_ns=0,
            skaddr=0xFFFF888000000000 + i, cgroup_id=7, bytes_sent=0, bytes_received=0,
            srtt_us=0, min_rtt_us=0, keepalive_idle=0, mss=0, health=0, pid=pid_base + i % 5, tid=pid_base + i % 5,
            saddr=v4("127.0.0.1"), daddr=v4("127.0.0.1"), syn_retransmits=0, synack_retransmits=0,
            retransmits=0, resets_sent=0, resets_received=0, sport=30000 + i % 20000, dport=8080 + i % 3,
            family=socket.AF_INET, pid_source=L.PID_SRC_CONNECT, direction=L.DIR_OUTBOUND, closed_by=0,
            comm=b"svc-%d" % (i % 5) + bytes(11),
        )
        kw.update(kinds[i % len(kinds)])
        yield ConnEvent(**kw)


def agent_records(n_per_host: int) -> list[dict]:
    """Records of three agents interleaved, each numbered 1..n like the pipeline does."""
    out = []
    builders = [RecordBuilder(host=h) for h in HOSTS]
    streams = [list(conn_events(n_per_host, pid_base=4000 + 100 * k)) for k in range(len(HOSTS))]
    for i in range(n_per_host):
        for b, events in zip(builders, streams):
            rec = b.from_event(events[i])
            rec["seq"] = i + 1
            assert_valid(rec)
            out.append(rec)
    return out


def run_sink(settings: KafkaSettings, spool_dir: str, records: list[dict], timeout: float = 30.0,
             expect_acked: int | None = None) -> tuple[dict, list[str]]:
    """Writes ``records`` in batches as the pipeline does, waits until the broker
    acknowledged ``expect_acked`` records (default: as many as written; more
    when a spool is replayed) or ``timeout``, closes; returns (stats, warnings).

    Waiting before close() matters: close() leaves in the spool whatever is not
    acknowledged within flush_timeout_s, including everything written before
    the producer's first connection was made."""
    warnings: list[str] = []
    sink = KafkaSink(settings, spool_dir, warn=warnings.append)
    try:
        for i in range(0, len(records), 100):
            for rec in records[i:i + 100]:
                sink.write(rec)
            sink.flush()
        want = len(records) if expect_acked is None else expect_acked
        deadline = time.monotonic() + timeout
        while sink.stats()["acked"] < want and time.monotonic() < deadline:
            sink.flush()
            time.sleep(0.02)
    finally:
        sink.close()
    return sink.stats(), warnings


def check_consumed(got, records: list[dict], key_of) -> None:
    """Intact (bytes equal to the stdout JSON, schema-valid), complete, and in order per key."""
    expected = {(r["host"], r["seq"]): orjson.dumps(r) for r in records}
    seen = {}
    by_key = defaultdict(list)
    for m in got:
        rec = orjson.loads(m.value)
        assert_valid(rec)
        ident = (rec["host"], rec["seq"])
        assert ident not in seen, f"duplicate {ident}"
        seen[ident] = m.value
        assert m.key == key_of(rec)
        by_key[m.key].append((m.partition, rec["seq"]))
    assert seen == expected
    for key, items in by_key.items():
        assert len({p for p, _ in items}) == 1, f"key {key!r} spread over partitions"
        seqs = [s for _, s in items]
        assert seqs == sorted(seqs), f"key {key!r} out of order"


@pytest.mark.parametrize("codec", CODECS)
def test_every_record_back_intact_and_in_order_per_host(tansu, tmp_path, codec):
    topic, partitions = unique_topic(f"sink-{codec}"), 3
    tansu.create_topic(topic, partitions)
    records = agent_records(400)
    settings = KafkaSettings(bootstrap=[tansu.bootstrap], topic=topic, compression=codec, linger_ms=5)
    ok, line = probe(settings, timeout=5)
    assert ok, line
    stats, warnings = run_sink(settings, str(tmp_path / "spool"), records)
    assert warnings == []
    assert stats["acked"] == len(records) and stats["dropped"] == 0 and stats["spool_bytes"] == 0, stats

    got = consume_to_end(tansu.bootstrap, topic, partitions, expect=len(records))
    check_consumed(got, records, key_of=lambda r: r["host"].encode())


def test_topic_per_type_and_host_pid_key(tansu, tmp_path):
    prefix = unique_topic("typed")
    settings = KafkaSettings(bootstrap=[tansu.bootstrap], topic=prefix + ".{type}", key="host_pid",
                             compression="zstd", linger_ms=5)
    for t in settings.topics():
        tansu.create_topic(t, 4)
    records = agent_records(200)
    stats, warnings = run_sink(settings, str(tmp_path / "spool"), records)
    assert warnings == [] and stats["acked"] == len(records), stats

    for rtype in ("connect", "accept", "close"):
        want = [r for r in records if r["type"] == rtype]
        got = consume_to_end(tansu.bootstrap, f"{prefix}.{rtype}", 4, expect=len(want))
        check_consumed(got, want, key_of=lambda r: f"{r['host']}/{r['pid']}".encode())
    assert consume_to_end(tansu.bootstrap, f"{prefix}.summary", 4, idle=0.3) == []
