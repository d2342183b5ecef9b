"""`connscope run` to Kafka (Tansu) at a fixed connection rate, with the production defaults.

    .venv/bin/python -m bench.kafka_run [--rate 10000] [--seconds 10] [--rounds 3]

What a production host pays for streaming per-connection records to Kafka:
the agent runs as the service does (`connscope run --output kafka`, every
other setting at its default: per-connection records, cpu_budget 0.25,
linger 50 ms, the spool), Tansu runs as a child process, and the bench's
generator makes loopback connections at a fixed rate inside the bench's own
namespace. Reported per round:
- the agent's CPU (user + sys, all threads, from schedstat) from the load's
  start until it is idle again, as a share of one core over the load, and
  over the load's second half alone (where overload sampling has settled);
- records delivered: the connect, accept and close records of the
  generator's port read back from the topic, against 4 per connection the
  generator made (2 with --ends: agent.connection_records = "ends");
- whether overload sampling started (an `agent` record with event
  `sampling`), and the `lost` records.
Prints a markdown table; BENCHMARKS.md's "Kafka at 10k connections/s"
section is that output.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from . import gen
from .agents import CONNSCOPE, REPO, _task_cpu_ns, settle
from .lab import BenchLab
from .profile import PY_SPY, summarize_stacks

PORT = 7100


def _consumer(bootstrap: str, topic: str):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100, request_timeout_ms=10000, max_partition_fetch_bytes=8 << 20)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    return consumer


def _read(consumer, until=None, idle: float = 2.0, timeout: float = 120.0) -> list[dict]:
    """Records until `until(records)` holds (or, without it, nothing came for `idle` s)."""
    out: list[dict] = []
    deadline, quiet = time.monotonic() + timeout, time.monotonic()
    while time.monotonic() < deadline:
        got = 0
        for batch in consumer.poll(timeout_ms=100).values():
            out += [orjson.loads(m.value) for m in batch]
            got += len(batch)
        if got:
            quiet = time.monotonic()
        if until is not None and until(out):
            return out
        if until is None and time.monotonic() - quiet >= idle:
            return out
    raise SystemExit(f"bench.kafka_run: timed out reading the topic ({len(out)} records)")



def one_round(lab: BenchLab, rate: float, seconds: float, tag: int, ends: bool = False,
              profile: bool = False) -> dict:
    from tests.kafka_sink.tansu import TansuBroker

    topic = f"bench-run-{tag}"
    with tempfile.TemporaryDirectory(prefix="connscope-bench-kafka-") as workdir:
        broker = TansuBroker(workdir)
        try:
            broker.create_topic(topic, 1)
            argv = [str(CONNSCOPE), "run", "--output", "kafka", "--kafka-bootstrap", broker.bootstrap,
                    "--kafka-topic", topic, "--state-dir", f"{workdir}/state"]
            if ends:
                argv += ["--connection-records", "ends"]
            agent = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(f"{workdir}/agent.err", "wb"))
            consumer = _consumer(broker.bootstrap, topic)
            try:
                _read(consumer, until=lambda rs: any(r["type"] == "agent" and r.get("event") == "start"
                                                     for r in rs), timeout=120)
                settle(lambda: _task_cpu_ns(agent.pid) / 1e9, 60)
                port = PORT + tag % 100
                spy = None
                if profile:  # py-spy on the agent while the load runs (bench/profile.py reads it)
                    spy = subprocess.Popen([str(PY_SPY), "record", "--pid", str(agent.pid), "--duration",
                                            str(int(seconds)), "--rate", "100", "--format", "raw", "--nolineno",
                                            "--threads", "--gil", "--nonblocking", "--output",
                                            f"{workdir}/spy.txt"], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                    time.sleep(0.5)  # py-spy attaches
                cpu0, t0 = _task_cpu_ns(agent.pid), time.monotonic()
                box: list = []
                load = threading.Thread(target=lambda: box.append(
                    gen.run(lab.pair, lab.loop_ns, gen.Load("loop", port, seconds, rate))))
                load.start()
                time.sleep(seconds / 2)  # the second half: where sampling, if any, has settled
                cpu_mid, t_mid = _task_cpu_ns(agent.pid), time.monotonic()
                load.join()
                late_share = (_task_cpu_ns(agent.pid) - cpu_mid) / 1e9 / (time.monotonic() - t_mid)
                if not box:
                    raise SystemExit("bench.kafka_run: the generator failed")
                res = box[0]
                if spy is not None:
                    spy.wait(timeout=60)
                settle(lambda: _task_cpu_ns(agent.pid) / 1e9, 60)
                cpu_s, wall_s = (_task_cpu_ns(agent.pid) - cpu0) / 1e9, time.monotonic() - t0
                agent.send_signal(signal.SIGTERM)
                rc = agent.wait(timeout=120)
                records = _read(consumer, idle=2.0)
            finally:
                if agent.poll() is None:
                    agent.kill()
                    agent.wait()
                consumer.close()
            err = open(f"{workdir}/agent.err", errors="replace").read()
            stacks = summarize_stacks(Path(f"{workdir}/spy.txt"), top=15) if profile else None
        finally:
            broker.stop()
    ours = [r for r in records if r["type"] in ("connect", "accept", "close") and port in (r["sport"], r["dport"])]
    sampling = [r for r in records if r["type"] == "agent" and r.get("event") == "sampling"]
    lost = sum(r["count"] for r in records if r["type"] == "lost")
    reasons: dict[str, int] = {}
    for r in records:
        if r["type"] == "lost":
            key = f"{r['stage']}/{r['reason']}"
            reasons[key] = reasons.get(key, 0) + r["count"]
    stop = next((r for r in records if r["type"] == "agent" and r.get("event") == "stop"), None)
    expected = (2 if ends else 4) * res["ok"] + res["failed"]
    return {
        "rate": res["rate"], "connections": res["ok"], "seconds": res["elapsed_s"], "agent_cpu_s": cpu_s,
        "wall_s": wall_s, "cpu_share": cpu_s / res["elapsed_s"], "late_share": late_share, "expected": expected, "delivered": len(ours),
        "sampling": max((r.get("keep_one_in", 1) for r in sampling), default=1), "sampling_records": len(sampling),
        "lost": lost, "lost_reasons": reasons, "rc": rc, "stop_seen": stop is not None, "stderr_tail": err[-400:], "stacks": stacks,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench.kafka_run", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=10_000, help="connections per second (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="load per round (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is shown (default %(default)s)")
    ap.add_argument("--profile", action="store_true", help="py-spy the agent in the first round (GIL samples)")
    ap.add_argument("--ends", action="store_true",
                    help="agent.connection_records = ends: one record per connection end (2 per connection)")
    args = ap.parse_args(argv)
    gen.build()
    t_start = time.monotonic()
    rounds = []
    with BenchLab() as lab:
        for r in range(args.rounds):
            out = one_round(lab, args.rate, args.seconds, r, args.ends, profile=args.profile and r == 0)
            rounds.append(out)
            print(f"  round {r + 1}: {out['rate']:,.0f} conn/s, agent {out['cpu_share']:.1%} of a core, "
                  f"{out['delivered']:,} of {out['expected']:,} records, sampling 1 in {out['sampling']}, "
                  f"lost {out['lost']}", file=sys.stderr, flush=True)

    def med(key):
        return statistics.median(r[key] for r in rounds)

    def span(key, fmt):
        vals = [r[key] for r in rounds]
        return fmt(med(key)) + ("" if len(vals) == 1 else f" ({fmt(min(vals))}–{fmt(max(vals))})")

    cmd = shlex.join([".venv/bin/python", "-m", "bench.kafka_run", *argv])
    print(f"Command: `{cmd}` (as root, from the repository; {time.monotonic() - t_start:.0f} s)\n")
    per = 2 if args.ends else 4
    print(f"| Rate reached, conn/s | Agent CPU, % of a core | the load's second half | Records delivered / "
          f"generator's × {per} | Sampling started | Lost records | Exit |")
    print("|---|---|---|---|---|---|---|")
    delivered = "; ".join(f"{r['delivered']:,} / {r['expected']:,}" for r in rounds)
    started = ", ".join("no" if r["sampling"] == 1 else f"yes (1 in {r['sampling']})" for r in rounds)
    print(f"| {span('rate', lambda v: f'{v:,.0f}')} | {span('cpu_share', lambda v: f'{100 * v:.1f}%')} | "
          f"{span('late_share', lambda v: f'{100 * v:.1f}%')} | "
          f"{delivered} | {started} | "
          f"{', '.join(str(r['lost']) + (' (' + ', '.join(f'{k} {v}' for k, v in r['lost_reasons'].items()) + ')' if r['lost'] else '') for r in rounds)} | "
          f"{', '.join(str(r['rc']) for r in rounds)} |")
    stacks = rounds[0]["stacks"]
    if stacks and stacks.get("samples"):
        print(f"\nProfile of round 1 (py-spy --gil, {stacks['samples']} samples at 100 Hz; threads: "
              + ", ".join(f"{k} {v}%" for k, v in stacks["threads"]) + ")\n")
        print("| Function (self time) | % of GIL samples | | Agent function (inclusive) | % of GIL samples |")
        print("|---|---|---|---|---|")
        for (a, pa), (b, pb) in zip(stacks["self"], stacks["inclusive"] + [["", ""]] * 15):
            print(f"| `{a}` | {pa} | | {'`' + b + '`' if b else ''} | {pb} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
