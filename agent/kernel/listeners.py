"""Listening sockets that predate the agent, for the kernel's owner map.

Inbound connections take their owner from the listener (bpf/listen.c);
listen() calls made before connscope started were never seen, so their
owners are read from /proc once at start-up, in every network namespace
(a container's listeners live in its own): processes are grouped by
/proc/PID/ns/net, each namespace's LISTEN sockets are read from one
member's /proc/PID/net/tcp{,6}, and socket inodes are mapped to the
processes holding them through /proc/PID/fd.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from ..procfs import cgroup_id, socket_fds
from ..procfs import read as _read

LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    family: int
    addr_bytes: bytes  # b"" for a wildcard address
    port: int
    pid: int
    comm: str
    cgroup_id: int


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _addr(hex_addr: str, family: int) -> bytes:
    # /proc/net/tcp prints addresses as host-order 32-bit words
    words = [int(hex_addr[i:i + 8], 16) for i in range(0, len(hex_addr), 8)]
    raw = b"".join(struct.pack("=I", w) for w in words)
    return b"" if raw.strip(b"\0") == b"" else raw


def listen_inodes(pid: int) -> dict[int, tuple[int, bytes, int]]:
    """inode -> (family, address, port) of LISTEN sockets in pid's netns."""
    out = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        text = _read(f"/proc/{pid}/net/{name}") or ""
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[3] == LISTEN:
                addr, port = f[1].split(":")
                out[int(f[9])] = (family, _addr(addr, family), int(port, 16))
    return out


def current_listeners() -> list[Listener]:
    by_netns: dict[str, list[int]] = {}
    for pid in _pids():
        try:
            by_netns.setdefault(os.readlink(f"/proc/{pid}/ns/net"), []).append(pid)
        except OSError:
            continue
    out = []
    for pids in by_netns.values():
        sockets = listen_inodes(pids[0])
        if not sockets:
            continue
        for pid in pids:
            for inode in {ino for _fd, ino in socket_fds(pid) or ()} & sockets.keys():
                family, addr, port = sockets.pop(inode)
                comm = (_read(f"/proc/{pid}/comm") or "").strip()[:15]
                out.append(Listener(family, addr, port, pid, comm, cgroup_id(pid)))
            if not sockets:
                break
    return out
