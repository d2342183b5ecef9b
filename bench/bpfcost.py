"""BPF run time per connection, per program, of each way connscope runs.

    .venv/bin/python -m bench.bpfcost [--rate 5000] [--seconds 3] [--configs service,per-connection]

Starts the agent, turns on kernel.bpf_stats_enabled (restored after), runs
the generator at a fixed rate on the bench's namespace loopback, and reads
each program's run_time_ns and run_cnt from /proc/<agent>/fdinfo: the
kernel's own accounting, not a sample. A fixed rate, not saturation, so
the figures compare across changes on a machine that other work shares.
`bench/run.sh` records the same table at saturation in its profile.
"""

from __future__ import annotations

import argparse
import json
import time

from . import gen
from .agents import REPO, Config, Tracer
from .lab import BenchLab
from .profile import STATS_SYSCTL, _bpf_progs, _prog_names

CONFIGS = {
    "service": ["run", "--no-connections", "--window", "5"],
    "per-connection": ["trace", "--json"],
}


def measure(lab: BenchLab, name: str, rate: float, seconds: float, port: int) -> dict:
    # `python -m agent` from this checkout (not the venv's console script, which
    # imports whichever checkout the venv was installed from): a worktree of
    # another commit measures that commit's programs.
    argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "agent", *CONFIGS[name]]
    tracer = Tracer(Config(name, argv, "connscope"), f"bpfcost-{name}")
    try:
        tracer.start()
        time.sleep(0.3)
        before = _bpf_progs(tracer.proc.pid)
        res = gen.run(lab.pair, lab.loop_ns, gen.Load("loop", port, seconds, rate=rate))
        after = _bpf_progs(tracer.proc.pid)
        names = _prog_names(tracer.proc.pid)
        tracer.stop()
    finally:
        tracer.cleanup()
    conns = max(1, res["ok"])
    progs = []
    for pid_, a in after.items():
        b = before.get(pid_, {"run_time_ns": 0, "run_cnt": 0})
        d_ns, d_cnt = a["run_time_ns"] - b["run_time_ns"], a["run_cnt"] - b["run_cnt"]
        if d_cnt:
            progs.append({"prog": names.get(pid_, str(pid_)), "runs_per_conn": round(d_cnt / conns, 2),
                          "ns_per_run": round(d_ns / d_cnt), "ns_per_conn": round(d_ns / conns)})
    progs.sort(key=lambda p: -p["ns_per_conn"])
    return {"config": name, "connections": res["ok"], "ns_per_conn": sum(p["ns_per_conn"] for p in progs),
            "programs": progs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--configs", default="service,per-connection")
    ap.add_argument("--json", action="store_true", help="one JSON object per configuration")
    args = ap.parse_args()
    gen.build()
    old = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    try:
        with BenchLab() as lab:
            for i, name in enumerate(args.configs.split(",")):
                out = measure(lab, name, args.rate, args.seconds, 2900 + i)
                if args.json:
                    print(json.dumps(out))
                    continue
                print(f"{name}: {out['ns_per_conn']} ns of BPF per connection ({out['connections']} connections)")
                for p in out["programs"]:
                    print(f"  {p['prog']:<40} {p['runs_per_conn']:>6} runs/conn {p['ns_per_run']:>6} ns/run "
                          f"{p['ns_per_conn']:>6} ns/conn")
    finally:
        STATS_SYSCTL.write_text(old)


if __name__ == "__main__":
    main()
