"""From raw runs to per-configuration figures: medians and spreads over rounds."""

from __future__ import annotations

import statistics


def derive(data: dict) -> dict:
    """{config: {phase: {metric: [value per round]}}} plus {config: {startup_s|peak_rss_mb: [...]}}.

    Metrics per phase: rate (connections or refused attempts per second the
    generator reached), ratio (rate / bare's rate in the same round and
    phase; at saturation, bare's rate measured just before this run), cpu_per_10k (tracer CPU seconds per 10,000 connections), core_pct
    (tracer CPU as % of one core from the phase's start until the tracer
    caught up), complete (% of
    the expected records seen), lost (records the tracer said it lost),
    retrans_seen / retrans_kernel (retransmits in records / the kernel's
    RetransSegs, retransmit phase only).
    """
    bare = {(r["round"], name): ph["generator"]["rate"]
            for r in data["runs"] if r["config"] == "bare" for name, ph in r["phases"].items()}
    out: dict = {}
    for run in data["runs"]:
        cfg = out.setdefault(run["config"], {"_run": {"startup_s": [], "peak_rss_mb": []}})
        for key in ("startup_s", "peak_rss_mb"):
            if run.get(key) is not None:
                cfg["_run"][key].append(run[key])
        for name, ph in run["phases"].items():
            g = ph["generator"]
            m = cfg.setdefault(name, {})
            conns = g["ok"] + g["failed"]

            def add(key, value):
                if value is not None:
                    m.setdefault(key, []).append(value)

            add("other_load_pct", ph.get("other_load_pct"))
            if name == "idle":
                if ph.get("cpu_s") is not None:
                    add("core_pct", 100 * ph["cpu_s"] / (g["elapsed_s"] + ph.get("settle_s", 0)))
                continue
            add("rate", g["rate"])
            b = bare.get((run["round"], name))
            if name == "saturation" and run.get("paired_bare"):
                b = run["paired_bare"]["rate"]  # measured just before this run
            add("ratio", g["rate"] / b if b else None)
            if ph.get("cpu_s") is not None and conns:
                add("cpu_per_10k", ph["cpu_s"] / conns * 1e4)
                # utilization over the whole phase, catching up included
                add("core_pct", 100 * ph["cpu_s"] / (g["elapsed_s"] + ph.get("settle_s", 0)))
            if ph.get("expected"):
                add("complete", 100 * ph.get("seen", 0) / ph["expected"])
            if ph.get("cpu_s") is not None:
                add("lost", ph.get("lost", 0))
            if "kernel_retransmits" in ph and run["config"] == "per-connection":
                add("retrans_seen", ph.get("retransmits", 0))
                add("retrans_kernel", ph["kernel_retransmits"])
    # BPF run time per connection at saturation, from the profile (one run per mode)
    out["_profile_bpf_ns"] = {mode: p.get("bpf_ns_per_conn") for mode, p in (data.get("profile") or {}).items()}
    return out


def spread(values: list[float] | None) -> tuple[float, float, float] | None:
    """(median, min, max), or None for no values."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def cell(values: list[float] | None, fmt: str = "{:.0f}", unit: str = "") -> str:
    """'median (min–max)' for a table; '—' when there is nothing."""
    s = spread(values)
    if s is None:
        return "—"
    m, lo, hi = s
    text = fmt.format(m) + unit
    if len(values) > 1 and fmt.format(lo) != fmt.format(hi):
        text += f" ({fmt.format(lo)}–{fmt.format(hi)})"
    return text


def median(values: list[float] | None) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None
