"""BENCHMARKS.md's generated sections, the plot, and a short summary on stderr.

BENCHMARKS.md keeps every `## ` section this module does not generate (a
hand-written analysis, the Kafka sink throughput section) as it is, after the
generated ones.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from . import plot
from .stats import cell, derive, median

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"
GENERATED = ("Machine", "How it runs", "Targets", "All configurations", "Fixed rates", "Stress cases",
             "Profile at saturation")
CONFIG_LABEL = {"bare": "bare (no tracer)", "service": "connscope service mode",
                "per-connection": "connscope per-connection (`trace --json`)",
                "tcplife": "BCC `tcplife-bpfcc`", "tcpstates": "BCC `tcpstates-bpfcc`"}
PCT = "{:.1f}"


def _get(d: dict, cfg: str, phase: str, metric: str) -> list | None:
    return d.get(cfg, {}).get(phase, {}).get(metric)


def _targets(d: dict) -> list[str]:
    rows = ["| Target | Goal | Measured: median (min–max) | Gap |", "|---|---|---|---|"]

    def ratio_row(label, cfg, goal):
        v = _get(d, cfg, "saturation", "ratio")
        if not v:
            return
        m = 100 * median(v)
        gap = m - 100 * goal
        rows.append(f"| {label} | ≥ {100 * goal:.0f}% of bare | {cell([100 * x for x in v], PCT, '%')} | "
                    f"{'met' if gap >= 0 else 'missed'} ({gap:+.1f} points) |")

    def max_row(label, vals, goal, fmt, unit, extra=""):
        if not vals:
            return
        m = median(vals)
        status = "met" if m <= goal else f"missed (over by {fmt.format(m - goal)}{unit})"
        rows.append(f"| {label} | ≤ {fmt.format(goal)}{unit} | {cell(vals, fmt, unit)}{extra} | {status} |")

    ratio_row("Service mode throughput at saturation", "service", 0.95)
    ratio_row("Per-connection mode throughput at saturation", "per-connection", 0.85)
    for cfg, label in (("service", "service mode"), ("per-connection", "per-connection mode")):
        comp = _get(d, cfg, "saturation", "complete")
        max_row(f"Lost records at saturation, {label}", _get(d, cfg, "saturation", "lost"), 0, "{:.0f}", "",
                f"; records complete: {cell(comp, '{:.2f}', '%')}" if comp else "")
    # CPU seconds per 10k connections at 10k/s is the share of a core; at 1k/s a tenth of it
    cpu = _get(d, "service", "10k", "cpu_per_10k")
    max_row("Service mode CPU at 10k connections/s", [100 * x for x in cpu] if cpu else None, 2, PCT,
            "% of a core")
    cpu = _get(d, "per-connection", "10k", "cpu_per_10k")
    max_row("Per-connection mode CPU at 10k connections/s", [100 * x for x in cpu] if cpu else None, 8, PCT,
            "% of a core")
    cpu = _get(d, "service", "1k", "cpu_per_10k")
    max_row("Service mode CPU at 1k connections/s", [10 * x for x in cpu] if cpu else None, 0.5, "{:.2f}",
            "% of a core")
    for cfg, label in (("service", "service mode"),):
        storm = d.get(cfg, {}).get("failure_storm", {})
        comp = storm.get("complete")
        max_row(f"Lost in the failure storm, {label}", storm.get("lost"), 0, "{:.0f}", "",
                f"; summary counts: {cell(comp, '{:.2f}', '%')} of the generator's" if comp else "")
    bpf = d.get("_profile_bpf_ns", {})
    for cfg, label in (("service", "service mode"), ("per-connection", "per-connection mode")):
        if bpf.get(cfg):
            max_row(f"BPF time per connection at saturation, {label}", [bpf[cfg] / 1000], 2, "{:.2f}", " µs")
    for cfg, label in (("service", "service mode"), ("per-connection", "per-connection mode")):
        max_row(f"Start-up (exec to first record), {label}", d.get(cfg, {}).get("_run", {}).get("startup_s"),
                1.5, "{:.2f}", " s")
    for cfg, label in (("service", "service mode"), ("per-connection", "per-connection mode")):
        max_row(f"Peak RSS (VmHWM), {label}", d.get(cfg, {}).get("_run", {}).get("peak_rss_mb"), 250,
                "{:.0f}", " MB")
    v = _get(d, "tcplife", "saturation", "ratio")
    if v:
        rows.append(f"| Reference: BCC tcplife throughput at saturation | ~55% of bare (issue) | "
                    f"{cell([100 * x for x in v], PCT, '%')} | — |")
    return rows


def _all_configs(d: dict) -> list[str]:
    rows = ["| Configuration | Saturation conn/s | vs bare | CPU s / 10k conn @1k/s | @10k/s | @saturation | "
            "CPU % of a core @saturation | Records complete @saturation | Lost @saturation | Start-up s | "
            "Peak RSS MB | Other load @saturation |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cfg, label in CONFIG_LABEL.items():
        if cfg not in d:
            continue
        c = d[cfg]
        sat = c.get("saturation", {})
        ratio = sat.get("ratio")
        rows.append("| " + " | ".join([
            label, cell(sat.get("rate")), cell([100 * x for x in ratio], PCT, "%") if ratio else "—",
            cell(c.get("1k", {}).get("cpu_per_10k"), "{:.3f}"), cell(c.get("10k", {}).get("cpu_per_10k"), "{:.3f}"),
            cell(sat.get("cpu_per_10k"), "{:.3f}"), cell(sat.get("core_pct"), "{:.0f}", "%"),
            cell(sat.get("complete"), "{:.2f}", "%"), cell(sat.get("lost")),
            cell(c["_run"]["startup_s"], "{:.2f}"), cell(c["_run"]["peak_rss_mb"]),
            cell(sat.get("other_load_pct"), "{:.0f}", "%")]) + " |")
    return rows


def _fixed_rates(d: dict) -> list[str]:
    rows = ["| Configuration | CPU % of a core, idle | conn/s reached @1k target | CPU % of a core | complete "
            "| conn/s reached @10k target | CPU % of a core | complete |", "|---|---|---|---|---|---|---|---|"]
    for cfg, label in CONFIG_LABEL.items():
        if cfg not in d:
            continue
        cells = [label, cell(d[cfg].get("idle", {}).get("core_pct"), PCT, "%")]
        for ph in ("1k", "10k"):
            m = d[cfg].get(ph, {})
            cells += [cell(m.get("rate")), cell(m.get("core_pct"), PCT, "%"), cell(m.get("complete"), "{:.2f}", "%")]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _stress(d: dict) -> list[str]:
    rows = ["| Configuration | Failure storm refused/s | vs bare | complete | lost | CPU s / 10k | "
            "Retransmit case conn/s | complete | lost | CPU % of a core | retransmits in records / kernel |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cfg, label in CONFIG_LABEL.items():
        if cfg not in d:
            continue
        f, r = d[cfg].get("failure_storm", {}), d[cfg].get("retransmit", {})
        ratio = f.get("ratio")
        retr = "—"
        if r.get("retrans_kernel"):
            retr = f"{median(r['retrans_seen']):.0f} / {median(r['retrans_kernel']):.0f}"
        rows.append("| " + " | ".join([
            label, cell(f.get("rate")), cell([100 * x for x in ratio], PCT, "%") if ratio else "—",
            cell(f.get("complete"), "{:.2f}", "%"), cell(f.get("lost")), cell(f.get("cpu_per_10k"), "{:.3f}"),
            cell(r.get("rate")), cell(r.get("complete"), "{:.2f}", "%"), cell(r.get("lost")),
            cell(r.get("core_pct"), PCT, "%"), retr]) + " |")
    return rows


def _profile(prof: dict) -> list[str]:
    out: list[str] = []
    for mode, p in prof.items():
        g = p.get("generator", {})
        st = p.get("stacks", {})
        argv = " ".join(p.get("argv", []))
        threads = ", ".join(t.split(": ")[-1] + f" {v}%" for t, v in st.get("threads", []))
        out += [f"### {mode} (`connscope {argv}`)", "",
                f"{g.get('ok', 0):,} connections in {g.get('elapsed_s', 0):.1f} s ({g.get('rate', 0):,.0f}/s); "
                f"agent CPU {p.get('agent_cpu_s', 0):.2f} s; {st.get('samples', 0)} py-spy samples at 100 Hz "
                f"(threads: {threads}).", "",
                "| Function (self time) | % of GIL samples | | Agent function (inclusive) | % of GIL samples |",
                "|---|---|---|---|---|"]
        incl, selfs = st.get("inclusive", []), st.get("self", [])
        for i in range(min(10, max(len(selfs), len(incl)))):
            s = selfs[i] if i < len(selfs) else ["", ""]
            n = incl[i] if i < len(incl) else ["", ""]
            out.append(f"| {'`%s`' % s[0] if s[0] else ''} | {s[1]} | | {'`%s`' % n[0] if n[0] else ''} | {n[1]} |")
        if p.get("bpf"):
            out += ["", f"Kernel side: the BPF programs ran {p['bpf_ns_per_conn']:,} ns per connection "
                    "(`kernel.bpf_stats_enabled`), in the generator's own time:", "",
                    "| tracepoint | runs per connection | ns per run | ns per connection |", "|---|---|---|---|"]
            ok = max(1, g.get("ok", 1))
            for b in p["bpf"][:8]:
                out.append(f"| {b['prog']} | {b['runs'] / ok:.2f} | {b['ns_per_run']} | {b['ns_per_conn']} |")
        out.append("")
    return out


def _capped(data: dict) -> list[str]:
    """A note naming the phases where a tracer was still busy when settling gave up."""
    hits: dict[tuple[str, str], int] = {}
    for run in data["runs"]:
        for name, ph in run["phases"].items():
            if ph.get("cpu_s") is not None and ph.get("settle_s", 0) >= data.get("settle_cap_s", 1e9) - 0.05:
                hits[(run["config"], name)] = hits.get((run["config"], name), 0) + 1
    if not hits:
        return []
    which = "; ".join(f"{c} {p} ({n}×)" for (c, p), n in sorted(hits.items()))
    return [f"- Still busy {data['settle_cap_s']:g} s after the load stopped (its later CPU is charged to the "
            f"next phase, its records still count): {which}.", ""]


def generated_markdown(data: dict) -> str:
    """The generated part of BENCHMARKS.md: title, intro and the GENERATED sections."""
    d = derive(data)
    m = data["machine"]
    svc = " ".join(data["service_args"])
    fallback = data["service_args"][0] == "trace"
    when = time.strftime("%Y-%m-%d", time.gmtime())
    idle_s = next((p["seconds"] for p in data["phases"] if p["mode"] == "idle"), 0)
    lines = [
        "# Benchmarks", "",
        f"Measured with `{data['command']}` on {when} at commit `{m['commit']}`: {data['rounds']} round(s) of "
        f"every configuration, {data['wall_s']:.0f} s in all. Figures are medians over the rounds with "
        "(min–max). Raw data: `bench/results/results.json`; plot: `bench/results/overhead.png`.", "",
        f"Service mode ran as `connscope {svc}`"
        + (" (`connscope run` did not exist yet; the lead re-runs this after the service issue lands, when the "
           "bench switches to `connscope run --no-connections` by itself)." if fallback else ".")
        + (" **A `--quick` run: short phases, for development only.**" if data.get("quick") else ""), "",
        "![throughput and CPU against connection rate](bench/results/overhead.png)", "",
        "## Machine", "",
        f"{m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB RAM, virtualization: {m['virt']}; kernel "
        f"{m['kernel']}; {m['os']}; Python {m['python']}; bpfcc-tools {m['bpfcc_tools']}.", "",
        "## How it runs", "",
        "- Load: `bench/churn.c`, compiled at bench time: client threads connect and close at once (the client "
        "closes first, leaving TIME_WAIT as a pool-less client does), server threads accept, read to EOF and "
        "close; loopback inside a namespace of the bench's own (169.254.x.y pair from `tests/netlab.py`), so "
        "its ports and TIME_WAIT sockets never touch the host's. Fixed rates are paced on absolute deadlines; "
        "saturation is one client and one server thread, as fast as they go (faster than more threads on 2 "
        "cores).",
        f"- Phases of every run, each on its own server port, after {idle_s:g} s idle (no load: the tracer's "
        "own cost, and the host's background connections it traces): "
        + ", ".join(f"{p['name']} {p['seconds']:g} s" + (f" at {p['rate']:,.0f}/s" if p['rate'] else "")
                    for p in data["phases"] if p["mode"] != "idle")
        + ". Failure storm: connects to a closed port (ECONNREFUSED), two threads. Retransmit: a veth pair "
        "with nftables dropping 2% of the packets each way at random, 64 blocking client threads.",
        "- Throughput ratio at saturation: against a bare saturation run of the same length made just before "
        "each tracer starts (paired), since the machine's other load drifts; other phases compare with the "
        "bare run of the same round.",
        "- Each round runs every configuration once, the order rotated per round. A tracer starts once per "
        "run; its CPU (user + sys of all its threads, from schedstat) is charged to a phase from the phase's "
        "start until it is idle again, so a tracer that lags pays for its backlog.",
        "- Output goes to a file on tmpfs (what /dev/null costs plus a copy), counted after the run: a record "
        "belongs to a phase by its port. Expected per connection: connscope 4 records (connect, accept, two "
        "closes), 1 per failed connect; service mode compares summary counts (connects, accepts, closes) of "
        "the generator's pid; tcplife 2 lines, tcpstates 10 (5 state changes per side). Lost: connscope's "
        "`lost` records (by time), BCC's `Possibly lost N samples`.",
        "- Other load: CPU the rest of the machine used during the phase (all cores busy time from /proc/stat "
        "less the tracer and the generator), % of all cores. Other engineers' test suites share this machine, "
        "so it is the noise to read the figures against.",
        "- Start-up: exec to the first line (connscope's `agent` start record; a BCC tool's header, flushed by "
        "`bench/bcc_ready.py` at its first poll). Peak RSS: VmHWM at the end of the run.", "",
        *_capped(data),
        "## Targets", "", *_targets(d), "",
        "## All configurations", "", *_all_configs(d), "",
        "## Fixed rates", "", *_fixed_rates(d), "",
        "## Stress cases", "", *_stress(d), "",
    ]
    if data.get("profile"):
        lines += ["## Profile at saturation", "",
                  "`bench/profile.py`: `py-spy record --gil` on the running agent (samples of the thread holding "
                  "the GIL: the agent's Python work, which cannot use more than one core; time in C called from a "
                  "function counts as that function's self time) and the run time of its BPF programs.", "",
                  *_profile(data["profile"])]
    return "\n".join(lines).rstrip() + "\n"


def merge(existing: str, generated: str) -> str:
    """The generated part, then every `## ` section of `existing` that is not generated, in order."""
    kept: list[str] = []
    for block in re.split(r"(?m)^(?=## )", existing):
        m = re.match(r"## (.+)", block)
        if m and m.group(1).strip() not in GENERATED:
            kept.append(block.rstrip() + "\n")
    return generated + ("\n" + "\n".join(kept) if kept else "")


def write_all(data: dict, results: Path) -> None:
    """Write the plot into `results` and the merged BENCHMARKS.md."""
    d = derive(data)
    plot.write(d, results / "overhead.png", f"connscope bench, {data['machine']['cores']} cores, "
                                            f"commit {data['machine']['commit']}")
    existing = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    BENCHMARKS.write_text(merge(existing, generated_markdown(data)))


def summary_text(data: dict) -> str:
    """The targets table and the main table, for the terminal."""
    d = derive(data)
    return "\n".join(["", *_targets(d), "", *_all_configs(d), ""])
