"""Count what a tracer wrote, per bench phase.

Each phase of a run uses its own server port (2000..9999, below the
namespace's ephemeral range), so a record belongs to a phase when either of
its ports is that phase's port. Summaries carry no ports: they belong to the
phase whose generator pid they describe. `lost` records carry no ports
either: they belong to the phase whose wall-clock window holds their `ts`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import orjson

CONN_TYPES = ("connect", "accept", "close")
SUMMARY_COUNTS = ("connects_ok", "connects_failed", "accepts", "closes")
RETRANS_FIELDS = ("retransmits", "syn_retransmits", "synack_retransmits")
BCC_LOST = re.compile(rb"Possibly lost (\d+) samples")


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _phase_at(windows: dict[str, tuple[float, float]], t: float) -> str | None:
    for name, (t0, t1) in windows.items():
        if t0 <= t <= t1:
            return name
    return None


def connscope_output(path: Path, ports: dict[int, str], pids: dict[int, str],
                     windows: dict[str, tuple[float, float]]) -> dict:
    """Per phase: records by type, summary counts, lost, retransmits; plus the stop record.

    `ports` maps a phase's server port to the phase, `pids` a generator pid to
    its phase, `windows` a phase to its (start, end) wall-clock seconds.
    """
    phases: dict[str, dict] = defaultdict(lambda: {"records": Counter(), "summary": Counter(), "lost": 0,
                                                   "lost_reasons": Counter(), "retransmits": 0})
    stop: dict = {}
    lost_other = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            kind = rec.get("type")
            if kind in CONN_TYPES:
                phase = ports.get(rec.get("dport")) or ports.get(rec.get("sport"))
                if phase is None:
                    continue
                ph = phases[phase]
                ph["records"][kind] += 1
                if kind == "close" or (kind == "connect" and rec.get("result") == "error"):
                    ph["retransmits"] += sum(rec.get(k) or 0 for k in RETRANS_FIELDS)
            elif kind == "summary":
                phase = pids.get(rec.get("pid"))
                if phase is not None:
                    phases[phase]["summary"].update({k: rec.get(k) or 0 for k in SUMMARY_COUNTS})
            elif kind == "lost":
                phase = _phase_at(windows, _epoch(rec["ts"]))
                if phase is None:
                    lost_other += rec["count"]
                else:
                    phases[phase]["lost"] += rec["count"]
                    phases[phase]["lost_reasons"][f"{rec['stage']}/{rec['reason']}"] += rec["count"]
            elif kind == "agent" and rec.get("event") == "stop":
                stop = rec
    return {"phases": {k: _plain(v) for k, v in phases.items()}, "stop": stop, "lost_outside_phases": lost_other}


def bcc_output(out_path: Path, err_path: Path, ports: dict[int, str], cols: tuple[int, int],
               err_spans: dict[str, tuple[int, int]]) -> dict:
    """Per phase: lines whose port columns match, and the 'Possibly lost N samples' in its stderr span.

    BCC prints losses on stderr without a time; `err_spans` maps a phase to
    the byte range its stderr grew by while the phase (and its settling) ran.
    """
    phases: dict[str, dict] = defaultdict(lambda: {"records": Counter(), "lost": 0})
    a, b = cols
    want = {str(p).encode(): name for p, name in ports.items()}
    with open(out_path, "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) <= b:
                continue
            phase = want.get(fields[a]) or want.get(fields[b])
            if phase is not None:
                phases[phase]["records"]["lines"] += 1
    err = err_path.read_bytes()
    for phase, (lo, hi) in err_spans.items():
        phases[phase]["lost"] += sum(int(n) for n in BCC_LOST.findall(err[lo:hi]))
    return {"phases": {k: _plain(v) for k, v in phases.items()},
            "lost_total": sum(int(n) for n in BCC_LOST.findall(err))}


def _plain(ph: dict) -> dict:
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in ph.items()}
