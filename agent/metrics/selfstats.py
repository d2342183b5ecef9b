"""The agent's own CPU and memory, read from the kernel (no psutil needed for two numbers)."""

from __future__ import annotations

import os


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    t = os.times()
    return t.user + t.system


def rss_bytes() -> int:
    """Resident set size now (VmRSS), 0 when /proc is unreadable."""
    return _status_kib("VmRSS:") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size (VmHWM)."""
    return _status_kib("VmHWM:") * 1024


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class CpuMeter:
    """Share of one core used between two calls of `share(now)` (monotonic seconds)."""

    def __init__(self, now: float):
        self._t = now
        self._cpu = cpu_seconds()

    def share(self, now: float) -> float:
        cpu = cpu_seconds()
        elapsed = now - self._t
        used = cpu - self._cpu
        self._t, self._cpu = now, cpu
        return used / elapsed if elapsed > 0 else 0.0
