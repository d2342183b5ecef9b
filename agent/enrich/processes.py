"""pid -> command line and executable, best effort.

Pids are reused, so the cache key is (pid, start time): field 22 of
/proc/PID/stat, in clock ticks since boot, which differs between two processes
that get the same pid. The start time is read again after the lookup and the
answer is cached only when it did not change, so a pid reused in between is not
cached under the old process's key.

Files are read as bytes, not with procfs.read(): argv and comm are arbitrary
bytes, and a strict UTF-8 decode would raise on them. Text is decoded with
"replace", so it can always be written as JSON. A process that exec()s keeps
its pid and start time, so its cached command line is the one seen first.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable, Iterable

from .scrub import Scrubber

CMDLINE_MAX = 512
_READ_MAX = 4 * CMDLINE_MAX  # enough bytes for CMDLINE_MAX characters


def _read_bytes(path: str, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat. comm (field 2) may hold spaces and ')',
    so fields are counted from the last ')'."""
    stat = _read_bytes(f"/proc/{pid}/stat", 4096)
    if not stat:
        return None
    fields = stat.rpartition(b")")[2].split()
    try:
        return int(fields[19])  # fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def _lookup(pid: int, scrub: Callable[[list[str]], list[str]] | None) -> dict:
    raw = _read_bytes(f"/proc/{pid}/cmdline", _READ_MAX)
    cmdline = None
    if raw:
        argv = raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")
        # scrubbed before it is cut: a secret must not survive half-masked
        cmdline = " ".join(scrub(argv) if scrub else argv)[:CMDLINE_MAX]
    try:
        exe = os.readlink(f"/proc/{pid}/exe".encode()).decode("utf-8", "replace")
    except OSError:
        exe = None  # gone, a kernel thread, or no permission
    return {"cmdline": cmdline or None, "exe": exe}


class ProcessInfo:
    """get(pid) -> {"cmdline", "exe"}; Nones for a process that is gone.
    Thread-safe, bounded LRU.

    cmdline: "scrubbed" (the default: secrets masked, agent/enrich/scrub.py,
    once per process), "full", or "off" (always None)."""

    def __init__(self, cache_size: int = 8192, cmdline: str = "scrubbed", sensitive_words: Iterable[str] = ()):
        self._cmdline = cmdline
        self._scrub = Scrubber(sensitive_words).scrub if cmdline == "scrubbed" else None
        self._cache: OrderedDict[tuple[int, int], dict] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def get(self, pid: int) -> dict:
        start = start_time(pid) if pid > 0 else None
        if start is None:
            return {"cmdline": None, "exe": None}
        key = (pid, start)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return dict(hit)
        info = _lookup(pid, self._scrub)
        if start_time(pid) != start:  # gone or reused meanwhile: do not trust it
            return {"cmdline": None, "exe": None}
        if info["cmdline"] is None:
            # Empty for a moment during exec (the new mm's argument area is set
            # after the old files are closed): answer, but ask again next time.
            return dict(info)
        if self._cmdline == "off":
            info["cmdline"] = None
        with self._lock:
            self._cache[key] = info
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return dict(info)
