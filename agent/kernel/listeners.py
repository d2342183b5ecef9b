"""Listening sockets that predate the agent, for the kernel's owner map.

Inbound connections take their owner from the listener (bpf/listen.c);
listen() calls made before connscope started were never seen, so their
owners are read from /proc once at start-up, through psutil (it maps socket
inodes to pids). Only this network namespace is visible from here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Listener:
    family: int
    addr_bytes: bytes
    port: int
    pid: int
    comm: str
    cgroup_id: int


def _cgroup_id(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            path = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), None)
        for mount in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            if path is not None and os.path.isdir(mount + path):
                return os.stat(mount + path).st_ino
    except OSError:
        pass
    return 0


def current_listeners() -> list[Listener]:
    out = []
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return out
    for c in conns:
        if c.status != psutil.CONN_LISTEN or not c.pid or not c.laddr:
            continue
        try:
            comm = psutil.Process(c.pid).name()[:15]
        except psutil.Error:
            continue
        fam = int(c.family)
        raw = socket.inet_pton(fam, c.laddr.ip)
        if raw.strip(b"\0") == b"":
            raw = b""
        out.append(Listener(fam, raw, c.laddr.port, c.pid, comm, _cgroup_id(c.pid)))
    return out
