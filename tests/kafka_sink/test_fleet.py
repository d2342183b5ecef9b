"""`connscope fleet` over real agents on two hosts (network + UTS namespaces) and a real broker.

Ground truth is the topic itself, read back by the test: each host's own
summaries, and the (host, run_id, seq) of every record. The fleet consumer
must merge exactly those, name the destination both hosts are refused by,
and tell a gap the test made (a record deleted in transit) from one the
agents reported (`lost` records).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone

import orjson
import pytest

from netlab import pick_port, wait_json_line

from ..agentrun import REPO, is_root
from ..fleetlab import DB_ADDR, DB_PORT, FleetHost, wait_until
from ..schema import assert_valid
from .tansu import consume_to_end, unique_topic

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not is_root(), reason="needs root (agents load eBPF)")]

PARTITIONS = 2
# (host name, successful connections, refused attempts)
HOSTS = (("fleet-host-a", 4, 2), ("fleet-host-b", 6, 3))
# a fleet window of ~31 years (aligned to the epoch: 2001-09 to 2033-05) holds the whole test
ONE_WINDOW = "1000000000"
USABLE_PORTS = 60999 - 32768 + 1  # a new network namespace's ip_local_port_range, none reserved
SUMMED = ("connects_ok", "connects_failed", "accepts", "closes", "active_closes", "retransmits")


def fleet(bootstrap: str, topic: str, *args: str, env: dict | None = None, timeout: float = 120,
          live: bool = False) -> list[dict]:
    """Runs `connscope fleet` over the whole topic (live: without --exit-at-end);
    its records, each schema-checked."""
    bounded = () if live else ("--exit-at-end",)
    cp = subprocess.run([sys.executable, "-m", "agent", "fleet", "--bootstrap", bootstrap, "--topic", topic,
                         "--group", "", "--from-beginning", *bounded, "--json", "--top", "100",
                         "--stats-interval", "0", "--gap-grace", "0", *args],
                        cwd=REPO, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert cp.returncode == 0, cp.stderr.decode()
    out = [orjson.loads(line) for line in cp.stdout.splitlines()]
    for i, rec in enumerate(out, 1):
        assert_valid(rec)
        assert rec["type"] == "fleet" and rec["seq"] == i
    return out


def raw_records(bootstrap: str, topic: str, **kw) -> list[dict]:
    return [orjson.loads(m.value) for m in consume_to_end(bootstrap, topic, PARTITIONS, **kw)]


def run_hosts(bootstrap, broker_port, topic, peer_cmd, workdir, *agent_args, traffic=None, read=None):
    """Starts an agent per host, makes each host's traffic, stops the agents;
    returns the hosts (closed by the caller). `read(bootstrap, topic)` reads the topic back."""
    read = read or (lambda b, t: raw_records(b, t, idle=0.2))
    hosts = []
    try:
        for name, _ok, _refused in HOSTS:
            h = FleetHost(name, broker_port, peer_cmd)
            hosts.append(h)
            h.start_agent(bootstrap, topic, os.path.join(workdir, name, "state"), *agent_args)
        for h in hosts:
            wait_until(lambda h=h: any(r["type"] == "agent" and r["event"] == "start" and r["host"] == h.name
                                       for r in read(bootstrap, topic))
                       or (h.agent.poll() is not None and pytest.fail(f"{h.name}: agent exited: {h.stderr()}")),
                       120, f"{h.name}'s start record")
        for h, (_name, ok, refused) in zip(hosts, HOSTS):
            port = pick_port()
            h.server(port)
            tries = h.client(h.pair.server_v4, port, ok, "--close-first")
            tries += h.client(DB_ADDR, DB_PORT, refused)
            assert [t["error"] for t in tries] == [None] * ok + ["ECONNREFUSED"] * refused
        if traffic is not None:
            traffic(hosts)
        for h in hosts:
            assert h.stop_agent() == 0, h.stderr()
        return hosts
    except BaseException:
        for h in hosts:
            h.close()
        raise


def by_run(records: list[dict]) -> dict:
    """(host, run_id, seq) -> record, duplicates dropped."""
    return {(r["host"], r["run_id"], r["seq"]): r for r in records}


@pytest.fixture(scope="module")
def two_hosts(tansu, peer_cmd):
    """Two hosts' agents into one Tansu topic; yields (topic, records read back)."""
    topic = unique_topic("fleet")
    tansu.create_topic(topic, PARTITIONS)
    port = int(tansu.bootstrap.rsplit(":", 1)[1])
    with tempfile.TemporaryDirectory(prefix="connscope-fleet-") as workdir:
        hosts = run_hosts(tansu.bootstrap, port, topic, peer_cmd, workdir)
        try:
            yield topic, raw_records(tansu.bootstrap, topic)
        finally:
            for h in hosts:
                h.close()


def test_fleet_windows_add_up_to_each_hosts_own_summaries(tansu, two_hosts):
    topic, raw = two_hosts
    own = Counter()
    for r in by_run(raw).values():
        if r["type"] == "summary":
            for f in SUMMED:
                own[(r["comm"], f)] += r[f]
    for (name, ok, refused) in HOSTS:  # what each host's client did, as its own agent summed it
        comm = f"cs-{name[-6:]}"
        assert (own[(comm, "connects_ok")], own[(comm, "connects_failed")]) == (ok, refused)

    out = fleet(tansu.bootstrap, topic)
    merged = Counter()
    hosts_seen = set()
    for w in (r for r in out if r["view"] == "window"):
        for p in w["top_by_churn"]:
            for f in SUMMED:
                merged[(p["comm"], f)] += p[f]
            hosts_seen.add((p["comm"], p["hosts"]))
    assert merged == own
    assert {comm for comm, _ in hosts_seen} == {f"cs-{n[-6:]}" for n, _, _ in HOSTS}
    # each host's TIME_WAIT sockets: its client closed first, once per connection
    pressure = {p["host"]: p for w in out if w["view"] == "window" for p in w["port_pressure"]}
    assert {h: (p["time_wait"], p["usable_ports"]) for h, p in pressure.items()} == {
        name: (ok, USABLE_PORTS) for name, ok, _ in HOSTS}
    [stream] = [r for r in out if r["view"] == "stream"]
    assert stream["final"] and stream["agent_hosts"] == 2 and stream["agent_runs"] == 2
    assert stream["consumed"] == len(raw) and stream["duplicates"] == len(raw) - len(by_run(raw))
    assert stream["gaps_unexplained"] == stream["gaps_explained"] == 0


def test_a_destination_refused_from_both_hosts_is_reported_as_such(tansu, two_hosts):
    topic, _raw = two_hosts
    out = fleet(tansu.bootstrap, topic, "--window", ONE_WINDOW)
    failing = [f for w in out if w["view"] == "window" for f in w["failing_destinations"]
               if (f["daddr"], f["dport"], f["error"]) == (DB_ADDR, DB_PORT, "ECONNREFUSED")]
    [f] = failing  # one fleet window holds both hosts' summaries
    assert f["hosts"] == 2 and f["host_names"] == [n for n, _, _ in HOSTS]
    assert f["attempts"] == sum(refused for _, _, refused in HOSTS)


def test_a_record_deleted_in_transit_is_an_unexplained_gap(tansu, two_hosts):
    from kafka import KafkaProducer

    topic, raw = two_hosts
    copy = unique_topic("fleet-gap")
    tansu.create_topic(copy, PARTITIONS)
    host_a = HOSTS[0][0]
    ours = sorted((r for r in by_run(raw).values() if r["host"] == host_a), key=lambda r: r["seq"])
    deleted = ours[len(ours) // 2]
    p = KafkaProducer(bootstrap_servers=tansu.bootstrap)
    try:
        for r in raw:
            if r is not deleted:
                p.send(copy, key=r["host"].encode(), value=orjson.dumps(r))
        p.flush(30)
    finally:
        p.close(5)
    out = fleet(tansu.bootstrap, copy)
    gaps = [r for r in out if r["view"] == "gap"]
    assert [(g["agent_host"], g["agent_run_id"], g["seq_first"], g["seq_last"], g["missing"], g["explained"])
            for g in gaps] == [(host_a, deleted["run_id"], deleted["seq"], deleted["seq"], 1, False)]
    [stream] = [r for r in out if r["view"] == "stream"]
    assert (stream["gaps_unexplained"], stream["missing_unexplained"], stream["gaps_explained"]) == (1, 1, 0)


MOCK_ENV = {"CONNSCOPE_KAFKA_API_VERSION": "2.3"}  # kafka-python speaks to the mock only at 2.3
BURST = 600  # connections per host during the outage: about 2,400 records, far more than the spool holds


def test_an_outage_replays_duplicates_and_a_tiny_spool_drops_records_that_lost_records_explain(
        mock_cluster, peer_cmd, tmp_path, monkeypatch):
    """The broker's replies stop reaching the hosts: it stores the batches it
    is sent, the agents time out on them, spool into 64 KiB and drop the
    rest, counted in `lost` records with their seqs. Once replies flow again
    the spools are replayed, and what the broker already had arrives twice.
    The fleet consumer removes exactly the duplicates the topic holds and
    explains every gap by the lost records."""
    topic = "connscope-fleet"
    mock_cluster.create_topic(topic, 4)
    broker_port = int(mock_cluster.bootstrap.rsplit(":", 1)[1])
    for k, v in MOCK_ENV.items():
        monkeypatch.setenv(k, v)

    def outage(hosts):
        for h in hosts:
            h.forwarder.drop_replies = True
        for h in hosts:
            port = pick_port()
            h.server(port)
            assert h.burst(port, BURST)["ok"] == BURST
        for h in hosts:  # each agent knows its loss (its lost record waits in the spool's reserve)
            wait_until(lambda h=h: "dropping records" in h.stderr(), 60, f"{h.name} to drop records")
        for h in hosts:
            h.forwarder.drop_replies = False
        wait_until(lambda: _settled(mock_cluster.bootstrap, topic), 120, "the replay")

    hosts = run_hosts(mock_cluster.bootstrap, broker_port, topic, peer_cmd, str(tmp_path),
                      "--kafka-spool-max-bytes", str(64 << 10), "--kafka-idempotence", "false",
                      "--kafka-request-timeout-ms", "1000", "--kafka-delivery-timeout-ms", "3000",
                      "--kafka-memory-max-bytes", "0", "--kafka-max-in-flight-bytes", "65536",
                      "--kafka-batch-size", "16384", traffic=outage, read=mock_raw)
    try:
        raw = mock_raw(mock_cluster.bootstrap, topic)
        unique = by_run(raw)
        dups = len(raw) - len(unique)
        assert dups > 0, "the broker stored nothing the agents sent again: nothing to remove"
        lost = [r for r in unique.values() if r["type"] == "lost" and r["stage"] == "sink"]
        assert {r["host"] for r in lost} == {n for n, _, _ in HOSTS}
        missing = _missing(unique)
        assert missing == sum(r["count"] for r in lost) > 0  # a dropped record never arrives

        out = fleet(mock_cluster.bootstrap, topic, env=MOCK_ENV)
        [stream] = [r for r in out if r["view"] == "stream"]
        assert stream["consumed"] == len(raw) and stream["duplicates"] == dups
        assert (stream["gaps_unexplained"], stream["missing_unexplained"]) == (0, 0)
        assert stream["missing_explained"] == missing and stream["gaps_explained"] >= 2
        gaps = [r for r in out if r["view"] == "gap"]
        assert all(g["explained"] and g["explained_by"][0]["reason"] == "spool_full" for g in gaps)
        assert {g["agent_host"] for g in gaps} == {n for n, _, _ in HOSTS}
    finally:
        for h in hosts:
            h.close()


def mock_raw(bootstrap: str, topic: str) -> list[dict]:
    from .conftest import consume_all
    return [orjson.loads(m.value) for m in consume_all(bootstrap, topic, 4)]


def _settled(bootstrap: str, topic: str) -> bool:
    """On every host, the lost records arrived and nothing below its newest seq is
    missing but what they report: the replays are done."""
    unique = by_run(mock_raw(bootstrap, topic))
    for name, _ok, _refused in HOSTS:
        ours = {k: r for k, r in unique.items() if k[0] == name}
        lost = sum(r["count"] for r in ours.values() if r["type"] == "lost" and r["stage"] == "sink")
        if not lost or _missing(ours) != lost:
            return False
    return True


def _missing(unique: dict) -> int:
    """Seqs not present between 1 and each run's highest."""
    top: dict = {}
    count: Counter = Counter()
    for host, run_id, seq in unique:
        top[(host, run_id)] = max(top.get((host, run_id), 0), seq)
        count[(host, run_id)] += 1
    return sum(top[k] - count[k] for k in top)


def test_live_windows_close_as_the_stream_moves_on(tansu, two_hosts):
    """Without --exit-at-end windows close by the summaries' own times (and the
    clock once caught up), not at the end: the same totals come out."""
    topic, raw = two_hosts
    own = sum(r["connects_ok"] for r in by_run(raw).values() if r["type"] == "summary")
    # lateness covers the skew between the two hosts' partitions as they are read
    out = fleet(tansu.bootstrap, topic, "--window", "1", "--lateness", "5", "--duration", "8", live=True)
    windows = [r for r in out if r["view"] == "window"]
    assert sum(p["connects_ok"] for w in windows for p in w["top_by_churn"]) == own
    [stream] = [r for r in out if r["view"] == "stream"]
    assert stream["late_summaries"] == 0 and stream["consumed"] == len(raw)


def test_in_a_consumer_group_and_as_a_table(tansu, two_hosts):
    """The default way to run it: a consumer group (here a new one, from the
    beginning) reads what every partition holds; and the table says it in words."""
    topic, raw = two_hosts
    out = fleet(tansu.bootstrap, topic, "--group", unique_topic("fleet-group"))
    [stream] = [r for r in out if r["view"] == "stream"]
    assert (stream["consumed"], stream["agent_hosts"], stream["duplicates"]) == (len(raw), 2, 0)

    cp = subprocess.run([sys.executable, "-m", "agent", "fleet", "--bootstrap", tansu.bootstrap, "--topic", topic,
                         "--group", "", "--from-beginning", "--exit-at-end", "--table", "--window", ONE_WINDOW],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert f"{DB_ADDR}:{DB_PORT} ECONNREFUSED from 2 hosts" in cp.stdout, cp.stdout
    assert "UNEXPLAINED 0 (0 records)" in cp.stdout


def test_since_and_until_bound_a_review_by_the_records_kafka_times(tansu):
    from kafka import KafkaProducer

    topic = unique_topic("fleet-times")
    tansu.create_topic(topic, PARTITIONS)
    t0 = int(time.time() * 1000) - 3_600_000  # an hour ago, then ten seconds later
    p = KafkaProducer(bootstrap_servers=tansu.bootstrap)
    try:
        for seq in range(1, 26):
            p.send(topic, key=b"h", value=orjson.dumps({"type": "close", "host": "h", "run_id": "r", "seq": seq}),
                   timestamp_ms=t0 if seq <= 10 else t0 + 10_000)
        p.flush(30)
    finally:
        p.close(5)
    cut = datetime.fromtimestamp((t0 + 5_000) / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    [after] = [r for r in fleet(tansu.bootstrap, topic, "--since", cut) if r["view"] == "stream"]
    [before] = [r for r in fleet(tansu.bootstrap, topic, "--until", cut) if r["view"] == "stream"]
    assert (after["consumed"], before["consumed"]) == (15, 10)
    [hour] = [r for r in fleet(tansu.bootstrap, topic, "--since", "-2h", "--until", "-1s") if r["view"] == "stream"]
    assert hour["consumed"] == 25 and hour["gaps_unexplained"] == 0


def test_a_broker_that_goes_away_is_one_line_on_stderr(tmp_path):
    """While it reads live, the brokers stop: kafka-python only retries and
    logs, and the consumer says what is wrong in one line (at most one a minute)."""
    from .tansu import TansuBroker

    broker = TansuBroker(str(tmp_path))
    try:
        topic = unique_topic("fleet-away")
        broker.create_topic(topic, 1)
        proc = subprocess.Popen([sys.executable, "-m", "agent", "fleet", "--bootstrap", broker.bootstrap, "--topic",
                                 topic, "--group", "", "--json", "--duration", "40", "--stats-interval", "1"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_json_line(proc, lambda r: r["view"] == "stream", 30)  # it is reading
            broker.stop()
            err = wait_until(lambda: _stderr_line(proc), 40, "a line on stderr")
            assert err.startswith("connscope: fleet: kafka: ") and "(fix: " in err, err
        finally:
            proc.kill()
            proc.wait()
    finally:
        broker.stop()


def _stderr_line(proc) -> str | None:
    import select
    if select.select([proc.stderr], [], [], 0)[0]:
        return proc.stderr.readline().decode().strip() or None
    return None
