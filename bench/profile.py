"""Where connscope spends its time under saturation: py-spy in user space, BPF stats in the kernel.

For per-connection and service mode: start the agent, sample it with
`py-spy record --gil --format raw` (from outside: no change to the agent)
while the generator saturates the loopback. --gil keeps the samples of the
thread that holds the GIL: the agent's Python work, which the GIL serialises
onto at most one core, is what limits it. Then and read the run time of each of its BPF
programs from /proc/<pid>/fdinfo (run_time_ns, run_cnt; counted only while
kernel.bpf_stats_enabled is 1, which is set for the run and restored after).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

from . import gen
from .agents import CONNSCOPE, REPO, Config, Tracer

PY_SPY = REPO / ".venv" / "bin" / "py-spy"
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
_LINENO = re.compile(r":\d+\)$")
_ENTRY = re.compile(r"\(agent/cli/|^Pipeline\.run |^run_session |^main ")


def _bpf_progs(pid: int) -> dict[int, dict]:
    """The BPF programs pid holds open: prog_id -> {run_time_ns, run_cnt, prog_type}."""
    out: dict[int, dict] = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if "bpf-prog" not in str(fd.readlink()):
                continue
            info = dict(line.split(":", 1) for line in (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
                        .splitlines() if ":" in line)
        except OSError:
            continue
        pid_ = int(info.get("prog_id", "0").strip())
        out[pid_] = {"run_time_ns": int(info.get("run_time_ns", "0").strip()),
                     "run_cnt": int(info.get("run_cnt", "0").strip())}
    return out


def _prog_names(pid: int) -> dict[int, str]:
    """prog id -> the tracepoint it is attached to (`bpftool perf show`; prog names are cut at 15 bytes)."""
    import json

    cp = subprocess.run(["bpftool", "perf", "show", "-j"], capture_output=True, text=True)
    try:
        rows = json.loads(cp.stdout or "[]")
    except ValueError:
        return {}
    progs = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True)
    try:
        backups = {r["id"] for r in json.loads(progs.stdout or "[]") if r.get("name", "").startswith("backup__")}
    except ValueError:
        backups = set()
    return {r["prog_id"]: (r.get("tracepoint") or r.get("func") or r.get("fd_type", "?"))
            + (" (backup)" if r["prog_id"] in backups else "")
            for r in rows if r.get("pid") == pid}


def _frame(f: str) -> str:
    """'poll (agent/kernel/loader.py:123)' -> 'poll (agent/kernel/loader.py)'."""
    return _LINENO.sub(")", f.strip())


def summarize_stacks(path: Path, top: int = 12) -> dict:
    """Collapsed stacks (py-spy raw) -> total samples, top functions by self and by inclusive share."""
    self_t: Counter = Counter()
    incl: Counter = Counter()
    threads: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n_ = int(n)
        frames = [_frame(f) for f in stack.split(";") if f]
        if frames and frames[0].startswith(("thread ", "process ")):
            threads[frames[0]] += n_
            frames = [f for f in frames[1:] if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        total += n_
        self_t[frames[-1]] += n_
        for f in set(frames):
            incl[f] += n_
    pct = (lambda c: [[k, round(100 * v / total, 1)] for k, v in c.most_common(top)]) if total else (lambda c: [])
    # inclusive: the agent's own functions, less the entry points every sample passes through
    incl = Counter({k: v for k, v in incl.items() if "(agent/" in k and not _ENTRY.search(k)})
    return {"samples": total, "self": pct(self_t), "inclusive": pct(incl),
            "threads": [[k, round(100 * v / max(1, sum(threads.values())), 1)] for k, v in threads.most_common()]}


def _profile_one(lab, name: str, argv: list[str], seconds: float, port: int) -> dict:
    tracer = Tracer(Config(name, argv, "connscope"), f"profile-{name}")
    raw = Path(f"/dev/shm/csbench-profile-{name}.txt")
    try:
        tracer.start()
        time.sleep(0.3)
        before = _bpf_progs(tracer.proc.pid)
        spy = subprocess.Popen([str(PY_SPY), "record", "--pid", str(tracer.proc.pid), "--duration",
                                str(int(seconds + 1)), "--rate", "100", "--format", "raw", "--nolineno",
                                "--threads", "--gil", "--nonblocking", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # py-spy attaches
        cpu0 = tracer.cpu_s()
        res = gen.run(lab.pair, lab.loop_ns, gen.Load("loop", port, seconds))
        cpu = tracer.cpu_s() - cpu0
        after = _bpf_progs(tracer.proc.pid)
        names = _prog_names(tracer.proc.pid)
        _, err = spy.communicate(timeout=60)
        tracer.stop()
        progs = []
        for pid_, a in after.items():
            b = before.get(pid_, {"run_time_ns": 0, "run_cnt": 0})
            d_ns, d_cnt = a["run_time_ns"] - b["run_time_ns"], a["run_cnt"] - b["run_cnt"]
            if d_cnt:
                progs.append({"prog": names.get(pid_, str(pid_)), "runs": d_cnt, "ns_per_run": round(d_ns / d_cnt),
                              "ns_per_conn": round(d_ns / max(1, res["ok"]))})
        progs.sort(key=lambda p: -p["ns_per_conn"])
        stacks = summarize_stacks(raw) if raw.exists() else {"error": err.decode(errors="replace")[-400:]}
        return {"argv": argv[1:], "generator": res, "agent_cpu_s": round(cpu, 3), "stacks": stacks,
                "bpf": progs, "bpf_ns_per_conn": sum(p["ns_per_conn"] for p in progs)}
    finally:
        tracer.cleanup()
        raw.unlink(missing_ok=True)


def run(lab, service: list[str], quick: bool, port_base: int) -> dict:
    """Profile per-connection and service mode at saturation; returns both summaries."""
    seconds = 3.0 if quick else 6.0
    old = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    try:
        cs = str(CONNSCOPE)
        return {
            "per-connection": _profile_one(lab, "per-connection", [cs, "trace", "--json"], seconds, port_base),
            "service": _profile_one(lab, "service", [cs, *service], seconds, port_base + 1),
        }
    finally:
        STATS_SYSCTL.write_text(old)
