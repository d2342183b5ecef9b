"""The `connscope fleet` screen: the latest fleet window, gaps and the stream's counts.

Fed the same `fleet` records JSON output gets. On a terminal the screen is
redrawn at each window and at the end; otherwise each window is printed
below the last.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ..decode.text import endpoint_text
from .base import write_out

_PROC = "{:<16} {:<24} {:>6} {:>9} {:>8} {:>7} {:>9} {:>9} {:>7}"
_PROC_HEAD = _PROC.format("COMM", "SERVICE", "HOSTS", "NEW/s", "OK", "FAILED", "LAT p50", "LAT p99", "RETR")
MAX_GAPS = 10


def _ms(us):
    return "-" if us is None else f"{us / 1000:.2f}ms"


def window_lines(w: dict, sort: str = "top_by_churn") -> list[str]:
    lines = [f"fleet window {w['window_start']} .. {w['window_end']}: {w['hosts']} hosts, "
             f"{w['processes']} processes, {w['summaries']} summaries", "", _PROC_HEAD]
    for p in w[sort]:
        lat = p["connect_latency_us"]
        lines.append(_PROC.format(p["comm"][:16], (p["unit"] or "-")[:24], p["hosts"], p["new_connections_per_s"],
                                  p["connects_ok"], p["connects_failed"], _ms(lat["p50"]), _ms(lat["p99"]),
                                  p["retransmits"]))
    if w["failing_destinations"]:
        lines += ["", "FAILING DESTINATIONS"]
        for f in w["failing_destinations"]:
            lines.append(f"  {endpoint_text(f['daddr'], f['dport'])} {f['error']} from {f['hosts']} hosts "
                         f"({f['attempts']} attempts; {', '.join(f['processes'])})")
    pressure = [p for p in w["port_pressure"] if p["used_share"] or p["diagnoses"]]
    if pressure:
        lines += ["", "PORT PRESSURE (TIME_WAIT / usable ephemeral ports)"]
        for p in pressure:
            share = "-" if p["used_share"] is None else f"{p['used_share'] * 100:.0f}%"
            lines.append(f"  {p['host']:<24} {share:>5} to {endpoint_text(p['daddr'], p['dport'])} "
                         f"{' '.join(p['diagnoses'])}")
    return lines


def stream_line(s: dict) -> str:
    return (f"consumed {s['consumed']}, duplicates {s['duplicates']}, hosts {s['agent_hosts']}, "
            f"gaps explained {s['gaps_explained']} ({s['missing_explained']} records), "
            f"UNEXPLAINED {s['gaps_unexplained']} ({s['missing_unexplained']} records)")


def gap_line(g: dict) -> str:
    why = "explained by lost records" if g["explained"] else "NOT EXPLAINED by any lost record"
    return f"  {g['agent_host']} run {g['agent_run_id'][:8]}: seq {g['seq_first']}..{g['seq_last']} " \
           f"({g['missing']} missing) {why}"


class FleetTableSink:
    def __init__(self, stream: TextIO | None = None, sort: str = "top_by_churn", redraw: bool | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.redraw = self.stream.isatty() if redraw is None else redraw
        self.sort = sort
        self.window: dict | None = None
        self.stats: dict | None = None
        self.gaps: list[dict] = []

    def write(self, rec: dict) -> None:
        view = rec.get("view")
        if view == "window":
            self.window = rec
            self._draw()
        elif view == "gap":
            self.gaps = (self.gaps + [rec])[-MAX_GAPS:]
            if not self.redraw:
                write_out(self.stream, gap_line(rec) + "\n")
        elif view == "stream":
            self.stats = rec
            if rec.get("final") or not self.redraw:
                self._draw() if self.redraw else write_out(self.stream, stream_line(rec) + "\n")

    def _draw(self) -> None:
        lines = window_lines(self.window, self.sort) if self.window else ["waiting for summaries..."]
        if self.redraw:
            if self.stats:
                lines += ["", stream_line(self.stats)]
            if self.gaps:
                lines += ["", "GAPS"] + [gap_line(g) for g in self.gaps]
            write_out(self.stream, "\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        else:
            write_out(self.stream, "\n".join(lines) + "\n\n")

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        pass
