"""A human table for `connscope trace` on a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from .base import SinkClosed, write_out

COLUMNS = ("TIME", "TYPE", "PID", "COMM", "LOCAL", "REMOTE", "RESULT", "MS", "RETR")
_FMT = "{:<12} {:<7} {:>7} {:<15} {:<28} {:<28} {:<14} {:>9} {:>4}"


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def format_row(r: dict) -> str | None:
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
                f"{r['connects_ok']} ok, {r['connects_failed']} failed ({fails}), latency p50/p99 {ms}, "
                f"{r['active_closes']} TIME_WAIT, {r['retransmits']} retransmits")
    if t == "diagnosis":
        where = f"{r['daddr']}:{r['dport']}"
        if r["state"] == "cleared":
            return f"ok {r['kind']} cleared: {r['comm']} (pid {r['pid']}) -> {where}"
        return f"!! {r['severity']} {r['kind']}: {r['comm']} (pid {r['pid']}) -> {where}: {r['hint']}"
    if t not in ("connect", "accept", "close"):
        return None
    if t == "connect":
        result = "ok" if r["result"] == "ok" else r["error"]
        ms = r["latency_us"]
        retr = r["syn_retransmits"]
    elif t == "accept":
        result, ms, retr = "ok", None, r["synack_retransmits"]
    else:
        result = r["error"] or f"by {r['closed_by']}"
        ms = r["duration_us"]
        retr = r["retransmits"]
    return _FMT.format(
        r["ts"][11:23], t, r["pid"], r["comm"][:15], _endpoint(r["saddr"], r["sport"]),
        _endpoint(r["daddr"], r["dport"]), result[:14], "-" if ms is None else f"{ms / 1000:.3f}", retr,
    )


class TableSink:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self._lines = [_FMT.format(*COLUMNS)]

    def write(self, record: dict) -> None:
        row = format_row(record)
        if row is not None:
            self._lines.append(row)

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
