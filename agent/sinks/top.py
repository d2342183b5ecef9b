"""The `connscope top` screen: per-process rows from each window's summaries."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .base import write_out

def _connects_per_s(r: dict) -> float:
    """Churn is opening connections: outbound attempts per second (a server
    accepting them is busy, not churning)."""
    return (r["connects_ok"] + r["connects_failed"]) / r["window_s"] if r["window_s"] else 0.0


SORT_KEYS = {
    "churn": _connects_per_s,
    "failures": lambda r: r["connects_failed"],
    "latency": lambda r: r["connect_latency_us"]["p99"] or 0,
    "retransmits": lambda r: r["retransmits"] + r["syn_retransmits"],
}
_FMT = "{:>7} {:<15} {:>8} {:>7} {:>6} {:>6} {:<16} {:>9} {:>9} {:>5} {:>5} {:>6}  {}"
HEADER = _FMT.format("PID", "COMM", "CONN/s", "ACC/s", "OK", "FAILED", "TOP ERROR", "LAT p50", "LAT p99", "RETR", "RST",
                     "TWAIT", "TOP DESTINATION")


def _ms(us):
    return "-" if us is None else f"{us / 1000:.2f}ms"


def format_row(r: dict) -> str:
    err = max(r["failures"].items(), key=lambda kv: kv[1])[0] if r["failures"] else "-"
    lat = r["connect_latency_us"]
    dest = r["top_destinations"][0] if r["top_destinations"] else None
    where = "-" if dest is None else f"{dest['daddr']}:{dest['dport']}"
    return _FMT.format(r["pid"], r["comm"][:15], f"{_connects_per_s(r):.1f}",
                       f"{r['accepts'] / r['window_s']:.1f}" if r["window_s"] else "-", r["connects_ok"],
                       r["connects_failed"], err[:16], _ms(lat["p50"]), _ms(lat["p99"]),
                       r["retransmits"] + r["syn_retransmits"], r["resets_sent"] + r["resets_received"],
                       r["active_closes"], where)


class TopSink:
    """Redraws on a terminal; prints one snapshot per interval otherwise."""

    def __init__(self, sort: str = "churn", limit: int = 20, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.key = SORT_KEYS[sort]
        self.sort = sort
        self.limit = limit
        self._rows: list[dict] = []

    def write(self, record: dict) -> None:
        if record["type"] == "summary":
            self._rows.append(record)

    def flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = sorted(self._rows, key=self.key, reverse=True)[: self.limit], []
        title = f"connscope top - {time.strftime('%H:%M:%S')} - {len(rows)} processes, sorted by {self.sort}"
        lines = [title, HEADER] + [format_row(r) for r in rows]
        prefix = "\x1b[H\x1b[2J" if self.tty else ""
        write_out(self.stream, prefix + "\n".join(lines) + "\n" + ("" if self.tty else "\n"))

    def close(self) -> None:
        pass
