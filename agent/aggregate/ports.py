"""Ephemeral-port use per destination, for the port_exhaustion_risk rule.

A connection's local port is unique per destination (the 4-tuple), so the
range runs out per remote address and port: what holds ports there is
mostly TIME_WAIT sockets, which outlive the process that closed first. The
process's network namespace is remembered when the process is first seen
(an fd keeps the namespace reachable after the process is gone), and read
once per window per namespace through agent/ports.
"""

from __future__ import annotations

import os
from collections import deque

from ..ports import PortReadError, ephemeral_range, reserved_ports, timewait_counts, usable_ports
from .window import WindowResult

MAX_NAMESPACES = 256
TIME_WAIT_S = 60  # Linux keeps a TIME_WAIT socket 60 s (TCP_TIMEWAIT_LEN)


class PortUsage:
    def __init__(self) -> None:
        self._fds: dict[int, int] = {}  # netns inode -> open fd
        self._ns_of: dict[int, int] = {}  # pid -> netns inode
        # (proc, dest) -> deque of (window end ns, active closes): TIME_WAIT
        # sockets this process left, still alive by Linux's 60 s
        self._closed_first: dict[tuple, deque] = {}
        self.errors = 0

    def note(self, pid: int) -> None:
        """Remembers pid's network namespace (call while the process is alive)."""
        if pid in self._ns_of or not pid:
            return
        path = f"/proc/{pid}/ns/net"
        try:
            ino = os.stat(path).st_ino
            if ino not in self._fds and len(self._fds) < MAX_NAMESPACES:
                self._fds[ino] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        if len(self._ns_of) > 65536:
            self._ns_of.clear()
        self._ns_of[pid] = ino

    def namespaces(self) -> dict[int, str]:
        """{netns inode: a path to it} of the processes noted so far."""
        return {ino: f"/proc/self/fd/{fd}" for ino, fd in self._fds.items()}

    def __call__(self, w: WindowResult) -> dict:
        """(proc, dest) -> {"used", "usable", "time_wait"} for outbound destinations."""
        per_ns: dict[int, tuple[dict, int] | None] = {}
        out = {}
        for proc, p in w.procs.items():
            ino = self._ns_of.get(proc[0])
            fd = self._fds.get(ino)
            if fd is None:
                continue
            if ino not in per_ns:
                per_ns[ino] = self._read(fd)
            data = per_ns[ino]
            if data is None:
                continue
            tw, usable = data
            for dest in p.dests:
                daddr, dport, direction = dest
                if direction != "outbound":
                    continue
                n = sum(c for (_l, raddr, rport), c in tw.items() if raddr == daddr and rport == dport)
                out[(proc, dest)] = {"used": n, "usable": usable, "time_wait": n,
                                     "time_wait_left_by_process": self._left_by(proc, dest, p.dests[dest], w.end_ns)}
        return out

    def _left_by(self, proc, dest, d, end_ns: int) -> int:
        q = self._closed_first.setdefault((proc, dest), deque())
        q.append((end_ns, d.active_closes))
        while q and end_ns - q[0][0] > TIME_WAIT_S * 1_000_000_000:
            q.popleft()
        if len(self._closed_first) > 65536:
            self._closed_first.clear()
        return sum(n for _, n in q)

    def _read(self, fd: int):
        path = f"/proc/self/fd/{fd}"
        try:
            lo, hi = ephemeral_range(path)
            return timewait_counts(path), usable_ports(lo, hi, reserved_ports(path))
        except PortReadError:
            self.errors += 1
            return None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
