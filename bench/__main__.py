"""connscope's benchmark: connection churn with and without tracers, side by side.

    ./bench/run.sh [--quick] [--rounds N] [--configs a,b] [--no-profile] [--no-write]
    ./bench/run.sh --from-json bench/results/results.json   # re-render only

Runs every configuration (bare, connscope service mode, connscope
per-connection mode, BCC tcplife and tcpstates) through the same phases of
load, in rounds that rotate the order so machine noise hits all alike; then
profiles connscope under saturation and writes bench/results/ (results.json,
overhead.png, profile) and the generated sections of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import agents, gen, report, runner
from .lab import BenchLab

RESULTS = Path(__file__).resolve().parent / "results"
PORT_BASE = 2000  # each run gets 10 ports from here; all stay below the ephemeral range


def _machine() -> dict:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    os_name = ""
    try:
        with open("/etc/os-release") as f:
            os_name = next((l.split("=", 1)[1].strip().strip('"') for l in f if l.startswith("PRETTY_NAME")), "")
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=agents.REPO).stdout.strip()
    virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
    hyper = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if l.startswith("Hypervisor vendor")), "")
    if hyper:
        virt = f"{hyper} guest" + (f", {virt}" if virt and virt != "none" else "")
    bcc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "bpfcc-tools"], capture_output=True,
                         text=True).stdout.strip()
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "os": os_name, "virt": virt or "none", "commit": commit,
            "bpfcc_tools": bcc, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short phases and one round (development)")
    ap.add_argument("--rounds", type=int, help="rounds of all configurations (default 3, --quick 1)")
    ap.add_argument("--configs", help="comma-separated subset, e.g. bare,per-connection")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of connscope")
    ap.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md and bench/results/")
    ap.add_argument("--from-json", metavar="PATH", type=Path,
                    help="no run: rewrite BENCHMARKS.md and the plot from a saved results.json")
    args = ap.parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        RESULTS.mkdir(exist_ok=True)
        report.write_all(data, RESULTS)
        print(report.summary_text(data), file=sys.stderr)
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    t_start = time.monotonic()

    gen.build()
    service = agents.service_args()
    configs = agents.configs(service)
    if args.configs:
        wanted = args.configs.split(",")
        unknown = set(wanted) - {c.name for c in configs}
        if unknown:
            ap.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
        configs = [c for c in configs if c.name in wanted]
    plan = runner.phases(args.quick)
    settle_cap = 4.0 if args.quick else 8.0
    runs: list[dict] = []
    prof: dict = {}
    with BenchLab() as lab:
        n = 0
        for r in range(rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for cfg in order:
                t0 = time.monotonic()
                res = runner.run_config(lab, cfg, plan, PORT_BASE + 10 * (n % 800), f"r{r}-{cfg.name}", settle_cap)
                res["round"] = r
                n += 1
                runs.append(res)
                sat = res["phases"].get("saturation", {}).get("generator", {}).get("rate")
                runner._log(f"round {r + 1}/{rounds} {cfg.name}: {time.monotonic() - t0:.0f} s, "
                            f"saturation {sat} conn/s")
        if not args.no_profile:
            from . import profile

            prof = profile.run(lab, service, args.quick, PORT_BASE + 10 * (n % 800))
    data = {
        "machine": _machine(),
        "command": "./bench/run.sh" + ("".join(" " + shlex.quote(a) for a in
                                                   (sys.argv[1:] if argv is None else argv))),
        "service_args": service,
        "rounds": rounds,
        "settle_cap_s": settle_cap,
        "quick": args.quick,
        "phases": [p.__dict__ for p in plan],
        "runs": runs,
        "profile": prof,
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    print(report.summary_text(data), file=sys.stderr)
    scratch = gen.BINARY.parent / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"  # bench/out/: git-ignored
    scratch.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    runner._log(f"raw results: {scratch} ({data['wall_s']} s)")
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "results.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        report.write_all(data, RESULTS)
        runner._log(f"wrote {RESULTS}/ and BENCHMARKS.md in {data['wall_s']} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except gen.BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
