"""Kernel monotonic nanoseconds to RFC 3339 UTC strings.

bpf_ktime_get_ns() is CLOCK_MONOTONIC, the clock of time.monotonic_ns();
the wall-clock offset is re-read every few seconds so an NTP step shows up
within that time rather than never.
"""

from __future__ import annotations

import time


class WallClock:
    REFRESH_NS = 5_000_000_000

    def __init__(self) -> None:
        self._offset = 0
        self._refreshed = -self.REFRESH_NS
        self._sec = -1
        self._sec_text = ""

    def _refresh(self, mono_ns: int) -> None:
        self._offset = time.time_ns() - time.monotonic_ns()
        self._refreshed = mono_ns

    def wall_ns(self, mono_ns: int) -> int:
        if mono_ns - self._refreshed > self.REFRESH_NS or mono_ns < self._refreshed:
            self._refresh(mono_ns)
        return mono_ns + self._offset

    def offset_ns(self, mono_ns: int) -> int:
        """Wall minus monotonic time, as wall_ns(mono_ns) would add it."""
        self.wall_ns(mono_ns)
        return self._offset

    def rfc3339(self, mono_ns: int) -> str:
        """``2026-11-24T07:31:02.123456Z`` for a CLOCK_MONOTONIC time."""
        return format_wall_ns(self.wall_ns(mono_ns), self)

    def now(self) -> str:
        return self.rfc3339(time.monotonic_ns())


def format_wall_ns(wall_ns: int, cache: WallClock | None = None) -> str:
    sec, rest = divmod(wall_ns, 1_000_000_000)
    if cache is not None and cache._sec == sec:
        prefix = cache._sec_text
    else:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        if cache is not None:
            cache._sec, cache._sec_text = sec, prefix
    return f"{prefix}.{rest // 1000:06d}Z"
