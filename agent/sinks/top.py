"""The `connscope top` screen: per-process rows from each window's summaries."""

from __future__ import annotations

import sys
import time
from datetime import datetime
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


# A process that stopped connecting stays on screen, at zero, for this many
# intervals (so "did my fix stop it?" shows as a drop to zero), then leaves.
LINGER_INTERVALS = 5
# An interval with no summary at all is drawn this long after it was due, so
# that a window whose summaries are merely late is not drawn empty first.
_EMPTY_SLACK = 0.5


def _zeroed(r: dict) -> dict:
    """A process's row for an interval in which it did nothing."""
    z = dict(r)
    z.update(connects_ok=0, connects_failed=0, accepts=0, failures={}, retransmits=0, syn_retransmits=0,
             resets_sent=0, resets_received=0, active_closes=0, connect_latency_us={"p50": None, "p99": None})
    return z


def _clock_of(r: dict) -> str:
    """HH:MM:SS, local time, of a summary's window end (an RFC 3339 UTC time)."""
    end = datetime.fromisoformat(r["window_end"].replace("Z", "+00:00"))
    return end.astimezone().strftime("%H:%M:%S")


class TopSink:
    """Redraws on a terminal; prints one snapshot per interval otherwise.

    Every interval is drawn, also one without any summary: its clock is the
    interval's own, and a process that stopped drops to zero (see
    LINGER_INTERVALS) instead of the screen freezing on the last busy one."""

    def __init__(self, sort: str = "churn", limit: int = 20, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = 1.0, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.key = SORT_KEYS[sort]
        self.sort = sort
        self.limit = limit
        self.interval = interval
        self._clock = clock
        self._rows: list[dict] = []
        self._next_empty: float | None = None
        self._quiet: dict[tuple[int, str], tuple[dict, int]] = {}  # (pid, comm) -> (zero row, idle intervals)

    def write(self, record: dict) -> None:
        if record["type"] == "summary":
            self._rows.append(record)

    def flush(self) -> None:
        now = self._clock()
        if self._rows:
            rows, self._rows = self._rows, []
            self._draw(rows, _clock_of(rows[0]))
        elif self._next_empty is None or now < self._next_empty:
            if self._next_empty is None:
                self._next_empty = now + self.interval * (1 + _EMPTY_SLACK)
            return
        else:
            self._draw([], time.strftime("%H:%M:%S"))
        self._next_empty = now + self.interval * (1 + _EMPTY_SLACK)

    def _draw(self, rows: list[dict], clock: str) -> None:
        active = {(r["pid"], r["comm"]) for r in rows}
        for r in rows:
            self._quiet[(r["pid"], r["comm"])] = (_zeroed(r), 0)
        shown = list(rows)
        for k, (zero, idle) in list(self._quiet.items()):
            if k in active:
                continue
            if idle + 1 > LINGER_INTERVALS:
                del self._quiet[k]
                continue
            self._quiet[k] = (zero, idle + 1)
            shown.append(zero)
        shown = sorted(shown, key=self.key, reverse=True)[: self.limit]
        title = f"connscope top - {clock} - {len(shown)} processes, sorted by {self.sort}"
        lines = [title, HEADER] + [format_row(r) for r in shown]
        prefix = "\x1b[H\x1b[2J" if self.tty else ""
        write_out(self.stream, prefix + "\n".join(lines) + "\n" + ("" if self.tty else "\n"))

    def close(self) -> None:
        pass
