"""What the Prometheus connection metrics cost: the update at a window's end and a scrape.

    .venv/bin/python -m bench.metricscost [--procs 1000] [--dests 5] [--windows 10]

A window of `procs` processes with `dests` destinations each (every row with
connects, failures, closes, retransmits and a latency sketch of 200
values), counted into ConnectionMetrics `windows` times (the reader thread's
work at each window's end), then scraped through prometheus_client's own
text exposition (the HTTP thread's work per scrape). CPU time of this process.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time


def window(procs: int, dests: int):
    from agent.aggregate.window import DestStats, ProcStats, Thresholds, WindowResult

    rng = random.Random(2)
    out = {}
    for i in range(procs):
        p = ProcStats()
        p.names = {"unit": f"svc{i}.service"}
        for k in range(dests):
            d = DestStats(connects_ok=rng.randint(1, 500), connects_failed=rng.randint(0, 3), closes=100,
                          active_closes=50, retransmits=rng.randint(0, 9), resets_received=1)
            if d.connects_failed:
                d.failures["ECONNREFUSED"] = d.connects_failed
            for _ in range(200):
                d.latency.add(rng.lognormvariate(6, 0.8))
            p.dests[(f"10.{i % 250}.{k}.5", 5432, "outbound")] = d
        out[(1000 + i, f"proc{i}", 7)] = p
    return WindowResult(0, 60_000_000_000, out, 0, Thresholds(), 5)


def main() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.metrics.connections import ConnectionMetrics

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=1000)
    ap.add_argument("--dests", type=int, default=5)
    ap.add_argument("--windows", type=int, default=10)
    args = ap.parse_args()
    w = window(args.procs, args.dests)
    metrics = ConnectionMetrics(top_destinations=10, max_series=100_000)
    t0 = time.process_time()
    for _ in range(args.windows):
        metrics.add_window(w, None, [])
    per_window = (time.process_time() - t0) / args.windows

    class Collector:
        def collect(self):
            return metrics.families()

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector())
    t0 = time.process_time()
    text = generate_latest(reg)
    scrape = time.process_time() - t0
    series = sum(len(t) for t in metrics._series.values()) + len(metrics._hist)
    rows = args.procs * args.dests
    print("| rows per window | series | update per window | per row | one scrape | scrape size |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {rows} | {series} | {per_window * 1000:.1f} ms | {per_window / rows * 1e6:.1f} us | "
          f"{scrape * 1000:.0f} ms | {len(text) / 1e6:.1f} MB |")
    print(f"\n`{shlex.join(['.venv/bin/python', '-m', 'bench.metricscost', *sys.argv[1:]])}`")


if __name__ == "__main__":
    main()
