"""A human table for `connscope trace` on a terminal.

Two layouts, chosen by the terminal's width: a wide one (WIDE_MIN columns and
more) with both endpoints and millisecond times, and a narrow one that fits
80 columns. Connect latency (CONNECT) and lifetime (LIFETIME) have columns of
their own, each with its unit in the cell. Lines that are not connection rows
(the start banner, summaries, diagnoses) wrap at the width with an indent, so
the terminal never wraps a line itself.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import Callable, TextIO

from ..decode.text import endpoint_text
from .base import SinkClosed, write_out


def _ms(us: int | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}ms" if us < 10_000 else f"{us / 1000:.1f}ms"


def _lifetime(us: int | None) -> str:
    if us is None:
        return "-"
    s = us / 1e6
    if s < 1:
        return f"{us / 1000:.1f}ms"
    if s < 60:
        return f"{s:.2f}s"
    return f"{s / 60:.1f}m" if s < 3600 else f"{s / 3600:.1f}h"


def _fit(text: str, width: int) -> str:
    """Cut from the left, keeping the end (an endpoint's port) visible."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


# (header, width, align, value of a row's cells dict)
Column = tuple[str, int, str, Callable[[dict], str]]
WIDE: list[Column] = [
    ("TIME", 12, "<", lambda c: c["time"]), ("TYPE", 7, "<", lambda c: c["type"]),
    ("PID", 7, ">", lambda c: c["pid"]), ("COMM", 15, "<", lambda c: c["comm"]),
    ("LOCAL", 28, "<", lambda c: c["local"]), ("REMOTE", 28, "<", lambda c: c["remote"]),
    ("RESULT", 14, "<", lambda c: c["result"]), ("CONNECT", 10, ">", lambda c: c["connect"]),
    ("LIFETIME", 9, ">", lambda c: c["lifetime"]), ("RETR", 4, ">", lambda c: c["retr"]),
]
NARROW: list[Column] = [  # 80 columns: no local end, no retransmits, seconds only
    ("TIME", 8, "<", lambda c: c["time"][:8]), ("TYPE", 5, "<", lambda c: c["type"][:5]),
    ("PID", 7, ">", lambda c: c["pid"]), ("COMM", 9, "<", lambda c: c["comm"][:9]),
    ("REMOTE", 19, "<", lambda c: c["remote"]), ("RESULT", 9, "<", lambda c: c["result"][:9]),
    ("CONNECT", 8, ">", lambda c: c["connect"]), ("LIFETIME", 8, ">", lambda c: c["lifetime"]),
]
WIDE_MIN = sum(w for _, w, _, _ in WIDE) + len(WIDE) - 1


def _cells(r: dict) -> dict | None:
    t = r["type"]
    if t not in ("connect", "accept", "close"):
        return None
    connect = lifetime = "-"
    if t == "connect":
        result, connect, retr = ("ok" if r["result"] == "ok" else r["error"]), _ms(r["latency_us"]), \
            r["syn_retransmits"]
    elif t == "accept":
        result, retr = "ok", r["synack_retransmits"]
    else:
        result, lifetime, retr = r["error"] or f"by {r['closed_by']}", _lifetime(r["duration_us"]), r["retransmits"]
    return {"time": r["ts"][11:23], "type": t, "pid": str(r["pid"]), "comm": r["comm"][:15],
            "local": endpoint_text(r["saddr"], r["sport"]), "remote": endpoint_text(r["daddr"], r["dport"]),
            "result": result, "connect": connect, "lifetime": lifetime, "retr": str(retr)}


def _prose(r: dict) -> str | None:
    """The one-line text of a record that is not a connection row."""
    t = r["type"]
    if t == "lost":
        return f"!! lost {r['count']} records at stage {r['stage']} ({r['reason']})"
    if t == "agent":
        return f"-- agent {r['event']}" + (f": {r['hooks_summary']}" if r.get("hooks_summary") else "")
    if t == "summary":
        lat = r["connect_latency_us"]
        fails = ", ".join(f"{k} {v}" for k, v in r["failures"].items()) or "none"
        ms = "-" if lat["p50"] is None else f"{lat['p50'] / 1000:.3f}/{lat['p99'] / 1000:.3f} ms"
        return (f"== {r['window_end'][11:19]} {r['comm']} (pid {r['pid']}): {r['new_connections_per_s']} new/s, "
                f"{r['connects_ok']} ok, {r['connects_failed']} failed ({fails}), connect latency p50/p99 {ms}, "
                f"{r['active_closes']} TIME_WAIT, {r['retransmits']} retransmits")
    if t == "diagnosis":
        where = f"{r['daddr']}:{r['dport']}"
        if r["state"] == "cleared":
            return f"ok {r['kind']} cleared: {r['comm']} (pid {r['pid']}) -> {where}"
        return f"!! {r['severity']} {r['kind']}: {r['comm']} (pid {r['pid']}) -> {where}: {r['hint']}"
    return None


class Table:
    """Formats records as lines for a terminal `width` columns wide."""

    def __init__(self, width: int):
        self.width = width
        self.columns = WIDE if width >= WIDE_MIN else NARROW

    def header(self) -> str:
        return self._line({h: h for h, *_ in self.columns}, header=True)

    def _line(self, cells: dict, header: bool = False) -> str:
        parts = []
        for name, width, align, value in self.columns:
            text = cells[name] if header else _fit(value(cells), width)
            parts.append(f"{text:{align}{width}}")
        return " ".join(parts).rstrip()

    def lines(self, r: dict) -> list[str]:
        cells = _cells(r)
        if cells is not None:
            return [self._line(cells)]
        text = _prose(r)
        if text is None:
            return []
        return textwrap.wrap(text, self.width, subsequent_indent="   ", break_on_hyphens=False) or [text]


class TableSink:
    def __init__(self, stream: TextIO | None = None, width: int | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.table = Table(width or shutil.get_terminal_size((WIDE_MIN, 24)).columns)
        self._lines = [self.table.header()]

    def write(self, record: dict) -> None:
        self._lines += self.table.lines(record)

    def flush(self) -> None:
        if not self._lines:
            return
        text, self._lines = "\n".join(self._lines) + "\n", []
        write_out(self.stream, text)

    def close(self) -> None:
        try:
            self.flush()
        except SinkClosed:
            pass
