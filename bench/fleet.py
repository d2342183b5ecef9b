"""`connscope fleet` throughput: window summaries consumed per second on one core.

    .venv/bin/python -m bench.fleet [--hosts 10000] [--procs 5] [--windows 2] [--no-broker]

The stream of a fleet: every host sends one summary per process and window
(60 s by default). The summaries are real ones, made by the agent's own
aggregation and record code (WindowAggregator's results -> summary_records)
with five destinations each, failures, and latency and lifetime sketches;
about 200 variants, each sent as every host in turn with its own host,
run_id, seq and window end, so the consumer sees `hosts` distinct hosts.

Two measurements, side by side in one run:
- the consumer alone: FleetConsumer.take() of every encoded summary, then
  the windows' records built, in this process (CPU time of this process);
- the whole command through Tansu: the summaries produced to a 4-partition
  topic first, then `connscope fleet --group "" --from-beginning
  --exit-at-end --json` timed as a child process (its CPU time, all
  threads, and peak RSS, from GNU time).
Needed to keep up: hosts * procs / 60 summaries per second.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time

import orjson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = 200


def variants(n: int = VARIANTS) -> list[dict]:
    """Summary records as the agent makes them (aggregate/window.py, records/aggregates.py)."""
    from agent.aggregate.window import DestStats, ProcStats, Thresholds, WindowResult
    from agent.records.aggregates import summary_records
    from agent.records.build import RecordBuilder

    rng = random.Random(1)
    builder = RecordBuilder(host="template")
    out = []
    for i in range(n):
        p = ProcStats()
        p.names = {"unit": f"svc{i % 50}.service", "cgroup_path": f"/system.slice/svc{i % 50}.service"}
        for k in range(5):
            d = DestStats(connects_ok=rng.randint(10, 5000), connects_failed=rng.randint(0, 20),
                          closes=rng.randint(10, 5000), active_closes=rng.randint(0, 5000),
                          retransmits=rng.randint(0, 50))
            if d.connects_failed:
                d.failures["ECONNREFUSED"] = d.connects_failed
            for _ in range(200):
                d.latency.add(rng.lognormvariate(6, 0.8))
                d.lifetime.add(rng.lognormvariate(10, 1.5))
            p.dests[(f"10.{i % 7}.{k}.5", 5432 + k, "outbound")] = d
            p.merge(d)
            p.latency.merge(d.latency)
            p.lifetime.merge(d.lifetime)
        end = 60_000_000_000
        w = WindowResult(0, end, {(1000 + i, f"svc{i % 50}", 5000 + i): p}, 0, Thresholds(), 5)
        out += summary_records(builder, w, {})
    return out


def stream(hosts: int, procs: int, windows: int) -> list[bytes]:
    """Encoded summaries: each window, each host sends `procs` of the variants."""
    base = variants()
    out = []
    t0 = 1_800_000_000
    for w in range(windows):
        end = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + 60 * w + 30)) + ".000000Z"
        for h in range(hosts):
            for j in range(procs):
                rec = dict(base[(h * procs + j) % len(base)])
                rec.update(host=f"host{h:05d}", run_id=f"{h:032x}", seq=w * procs + j + 1, window_end=end)
                out.append(orjson.dumps(rec))
    return out


def in_process(values: list[bytes]) -> dict:
    from agent.fleet.consumer import FleetConsumer
    from agent.fleet.ledger import Ledger
    from agent.fleet.merge import FleetWindows
    from agent.fleet.records import FleetRecords
    from agent.records.build import RecordBuilder

    emitted = []
    c = FleetConsumer(None, FleetWindows(60), Ledger(), FleetRecords(RecordBuilder(), 10), emitted.append)
    rss0 = _hwm()
    cpu0 = time.process_time()
    for v in values:
        c.take(v)
    for b in c.windows.drain():
        emitted.append(c.records.window(b))
    cpu = time.process_time() - cpu0
    return {"summaries": len(values), "cpu_s": cpu, "per_s": len(values) / cpu, "windows": len(emitted),
            "rss_growth_mib": (_hwm() - rss0) / 1024}


def through_tansu(values: list[bytes]) -> dict:
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from kafka import KafkaProducer
    from tests.kafka_sink.tansu import TansuBroker

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as wd:
        broker = TansuBroker(wd)
        try:
            topic = "bench-fleet"
            broker.create_topic(topic, 4)
            p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=1 << 20,
                              compression_type="lz4", max_request_size=4 << 20)
            for v in values:
                p.send(topic, key=orjson.loads(v)["host"].encode(), value=v)
            p.flush(120)
            p.close(10)
            argv = [sys.executable, "-m", "agent", "fleet", "--bootstrap", broker.bootstrap, "--topic", topic,
                    "--group", "", "--from-beginning", "--exit-at-end", "--json", "--stats-interval", "0"]
            # GNU time forks the command from its own small image: a child
            # forked from this big process would inherit its peak RSS
            timing = os.path.join(wd, "time.txt")
            t0 = time.monotonic()
            cp = subprocess.run(["/usr/bin/time", "-o", timing, "-f", "%M %U %S", *argv], cwd=REPO,
                                capture_output=True, timeout=1800)
            wall = time.monotonic() - t0
            with open(timing) as f:
                kib, user, system = f.read().split()[-3:]
        finally:
            broker.stop()
    if cp.returncode != 0:
        raise SystemExit(f"fleet failed: {cp.stderr.decode()[-2000:]}")
    final = orjson.loads(cp.stdout.splitlines()[-1])
    cpu = float(user) + float(system)
    return {"summaries": final["records"].get("summary", 0), "wall_s": wall, "cpu_s": cpu,
            "per_s": final["records"].get("summary", 0) / cpu, "peak_rss_mib": int(kib) / 1024,
            "command": shlex.join(argv[1:])}


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=5, help="summaries per host and window")
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--no-broker", action="store_true", help="only the in-process measurement")
    args = ap.parse_args()
    t0 = time.monotonic()
    values = stream(args.hosts, args.procs, args.windows)
    size = sum(map(len, values)) / len(values)
    need = args.hosts * args.procs / 60
    print(f"{len(values)} summaries ({args.hosts} hosts x {args.procs} processes x {args.windows} windows), "
          f"{size:.0f} bytes each; keeping up needs {need:,.0f} summaries/s\n")
    a = in_process(values)
    print("| measured | summaries | CPU s | summaries/s per core | x needed | memory |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| FleetConsumer.take, in process | {a['summaries']} | {a['cpu_s']:.2f} | {a['per_s']:,.0f} | "
          f"{a['per_s'] / need:.1f} | +{a['rss_growth_mib']:.0f} MiB peak RSS |")
    if not args.no_broker:
        b = through_tansu(values)
        print(f"| `connscope fleet` through Tansu | {b['summaries']} | {b['cpu_s']:.2f} | {b['per_s']:,.0f} | "
              f"{b['per_s'] / need:.1f} | {b['peak_rss_mib']:.0f} MiB peak RSS (wall {b['wall_s']:.1f} s) |")
        print(f"\nfleet command: `{b['command']}`")
    print(f"\n`{shlex.join([os.path.relpath(sys.executable, REPO), '-m', 'bench.fleet', *sys.argv[1:]])}` "
          f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
