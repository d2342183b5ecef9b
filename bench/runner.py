"""One run of one configuration: start it, drive every phase of load, stop, count.

A run starts the tracer once (BCC compiles for seconds at every start, so a
start per phase would cost minutes) and drives the phases one after the
other, each on its own server port. A phase's CPU is the tracer's CPU from the
phase's start until it has caught up after the generator stopped (settle), so
work a lagging tracer does later is still charged to the phase that caused it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from . import count, gen
from .agents import Config, Tracer
from .lab import BenchLab


@dataclass(frozen=True)
class Phase:
    """A load: `idle` (none), `loop` (loopback churn), `refused` (failure storm) or `pair` (veth, random drop)."""

    name: str
    mode: str
    seconds: float
    rate: float = 0.0
    threads: int = 1
    drop_pct: float = 0.0


def phases(quick: bool) -> list[Phase]:
    """The phases of a run, in order. --quick shortens every one."""
    k = 0.4 if quick else 1.0
    return [
        Phase("idle", "idle", 2 * k),  # no load: what the tracer costs by itself (and the host's own churn)
        Phase("1k", "loop", 3 * k, rate=1_000),
        Phase("10k", "loop", 3 * k, rate=10_000),
        Phase("saturation", "loop", 3 * k),
        # two client threads: connect() to a closed port is cheap enough that one thread cannot fill two cores
        Phase("failure_storm", "refused", 2 * k, threads=2),
        # blocking connects stall ~1 s on every dropped SYN: many threads keep the rate up
        Phase("retransmit", "pair", 3 * k, rate=300, threads=64, drop_pct=2.0),
    ]


def host_busy_s() -> float:
    """CPU seconds all cores spent in tasks (and stolen by the hypervisor) since boot (/proc/stat).

    irq and softirq time are left out: the loopback's packet processing runs
    there, and the kernel charges it to no task, so it is the generator's own
    work that its rusage does not show.
    """
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[7]) / 100  # user nice system steal, USER_HZ = 100


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _drive(lab: BenchLab, phase: Phase, port: int) -> tuple[dict, dict]:
    """Run one phase's load to its end; returns (client result, extra ground truth)."""
    pair = lab.pair
    if phase.mode == "pair":
        lab.set_drop(port, phase.drop_pct)
        before = {ns: lab.tcp_counters(ns) for ns in (pair.client_ns, pair.server_ns)}
        server = gen.start_server(pair, pair.server_ns, pair.server_v4, port, phase.seconds + 60,
                                  threads=phase.threads)
        try:
            res = gen.run(pair, pair.client_ns, gen.Load("client", port, phase.seconds, phase.rate,
                                                         phase.threads, dests=1, addr=pair.server_v4))
        finally:
            srv = gen.finish_server(server)
        time.sleep(0.5)  # lost FINs are retransmitted after ~200 ms; let them finish
        after = {ns: lab.tcp_counters(ns) for ns in (pair.client_ns, pair.server_ns)}
        retrans = sum(after[ns]["Tcp:RetransSegs"] - before[ns]["Tcp:RetransSegs"] for ns in after)
        return res, {"server_pid": srv["pid"], "server_cpu_s": srv["cpu_s"], "accepted": srv["accepted"],
                     "kernel_retransmits": retrans}
    if phase.mode == "idle":
        t0 = time.monotonic()
        time.sleep(phase.seconds)
        return {"mode": "idle", "ok": 0, "failed": 0, "attempts": 0, "rate": 0.0,
                "elapsed_s": time.monotonic() - t0, "pid": -1}, {}
    load = gen.Load(phase.mode, port, phase.seconds, phase.rate, phase.threads)
    return gen.run(pair, lab.loop_ns, load), {}


def expected_records(config: Config, phase: Phase, res: dict) -> int | None:
    """Records (or lines) a complete trace of this phase holds; None when not defined."""
    if config.kind == "bare":
        return None
    if config.kind == "connscope" and config.per_ok == 0:  # service: summary counts instead
        return res["ok"] * (1 + 1 + 2) + res["failed"]
    listeners = config.per_listener if phase.mode in ("loop", "pair") else 0
    return res["ok"] * config.per_ok + res["failed"] * config.per_failed + listeners


def seen_records(config: Config, counted: dict) -> int:
    """The records of a phase that count against expected_records()."""
    if config.kind == "connscope" and config.per_ok == 0:
        s = counted.get("summary", {})
        return sum(s.get(k, 0) for k in count.SUMMARY_COUNTS)
    return sum(counted.get("records", {}).values())


def run_config(lab: BenchLab, config: Config, plan: list[Phase], port_base: int, tag: str,
               settle_cap_s: float) -> dict:
    """One run of `config` through every phase of `plan`; returns its measurements."""
    tracer = Tracer(config, tag)
    result: dict = {"config": config.name, "phases": {}}
    sat = next((p for p in plan if p.name == "saturation"), None)
    if config.argv and sat is not None:
        # Bare saturation right before this run: other users' load on the machine changes within
        # minutes, so the ratio to a bare run seconds away is the fair one.
        result["paired_bare"] = gen.run(lab.pair, lab.loop_ns, gen.Load("loop", port_base + 9, sat.seconds))
    ports: dict[int, str] = {}
    pids: dict[int, str] = {}
    windows: dict[str, tuple[float, float]] = {}
    err_spans: dict[str, tuple[int, int]] = {}
    try:
        tracer.start()
        result["startup_s"] = tracer.startup_s if config.argv else None
        time.sleep(0.3)  # let the start-up burst (listener scan, first poll) pass before measuring
        for i, phase in enumerate(plan):
            port = port_base + i
            ports[port] = phase.name
            err0 = tracer.err_path.stat().st_size if tracer.err_path else 0
            w0, cpu0, busy0, m0 = time.time(), tracer.cpu_s(), host_busy_s(), time.monotonic()
            res, extra = _drive(lab, phase, port)
            settled = tracer.settle(settle_cap_s)
            cpu = tracer.cpu_s() - cpu0
            # Everything else the machine did meanwhile (other users' work: noise), % of all cores.
            other = host_busy_s() - busy0 - cpu - res.get("cpu_s", 0) - extra.get("server_cpu_s", 0)
            other_pct = 100 * max(0.0, other) / ((time.monotonic() - m0) * (os.cpu_count() or 1))
            tracer.sample_rss()
            windows[phase.name] = (w0, time.time())
            err_spans[phase.name] = (err0, tracer.err_path.stat().st_size if tracer.err_path else 0)
            pids[res["pid"]] = phase.name
            if "server_pid" in extra:
                pids[extra["server_pid"]] = phase.name
            result["phases"][phase.name] = {
                "port": port, "generator": res, **extra, "cpu_s": cpu if config.argv else None,
                "settle_s": settled, "expected": expected_records(config, phase, res),
                "other_load_pct": round(other_pct, 1),
            }
        tracer.stop()
        result["peak_rss_mb"] = tracer.peak_rss_mb if config.argv else None
        result["returncode"] = tracer.returncode
        if config.kind == "connscope":
            counted = count.connscope_output(tracer.out_path, ports, pids, windows)
            result["stop"] = counted["stop"]
            result["lost_outside_phases"] = counted["lost_outside_phases"]
        elif config.kind == "bcc":
            counted = count.bcc_output(tracer.out_path, tracer.err_path, ports, config.port_cols, err_spans)
            result["lost_total"] = counted["lost_total"]
        else:
            counted = {"phases": {}}
        for name, ph in result["phases"].items():
            got = counted["phases"].get(name, {})
            ph.update(got)
            if config.argv:
                ph["seen"] = seen_records(config, got)
                ph.setdefault("lost", 0)
        if tracer.err_path is not None:
            err = tracer.err_path.read_text(errors="replace").strip()
            result["stderr_tail"] = err[-800:]
    finally:
        tracer.cleanup()
    return result
