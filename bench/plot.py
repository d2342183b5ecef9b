"""The overhead plot: throughput ratio and tracer CPU against connection rate."""

from __future__ import annotations

from pathlib import Path

from .stats import median, spread

LOOP_PHASES = ("1k", "10k", "saturation")
STYLE = {"service": ("tab:blue", "o"), "per-connection": ("tab:orange", "s"),
         "tcplife": ("tab:green", "^"), "tcpstates": ("tab:red", "v")}


def _err(values: list[float]) -> tuple[list[float], list[float]]:
    m, lo, hi = spread(values)
    return [m - lo], [hi - m]


def write(derived: dict, path: Path, title: str) -> None:
    """Two panels (log x): rate / bare rate, and CPU % of one core, per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    bare = derived.get("bare", {})
    for name, (color, marker) in STYLE.items():
        cfg = derived.get(name)
        if not cfg:
            continue
        xs, ys, lo, hi, cx, cy, clo, chi = [], [], [], [], [], [], [], []
        for ph in LOOP_PHASES:
            m = cfg.get(ph, {})
            bx = median(bare.get(ph, {}).get("rate"))
            if m.get("ratio") and bx:
                xs.append(bx)
                ys.append(100 * median(m["ratio"]))
                e = _err([100 * v for v in m["ratio"]])
                lo += e[0]
                hi += e[1]
            if m.get("core_pct") and m.get("rate"):
                cx.append(median(m["rate"]))
                cy.append(median(m["core_pct"]))
                e = _err(m["core_pct"])
                clo += e[0]
                chi += e[1]
        if xs:
            ax1.errorbar(xs, ys, yerr=[lo, hi], color=color, marker=marker, capsize=3, label=name)
        if cx:
            ax2.errorbar(cx, cy, yerr=[clo, chi], color=color, marker=marker, capsize=3, label=name)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.axhline(95, color="tab:blue", ls=":", lw=1)
    ax1.axhline(85, color="tab:orange", ls=":", lw=1)
    ax1.set_xlabel("connection rate offered (bare: connections/s)")
    ax1.set_ylabel("throughput, % of bare")
    ax1.set_title("Throughput vs bare (dotted: targets 95%, 85%)", fontsize=10)
    ax2.set_xlabel("connections/s reached with the tracer")
    ax2.set_ylabel("tracer CPU, % of one core")
    ax2.set_title("Tracer CPU (user + sys)", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
