"""Which process holds a socket, and the options set on it: what `ss -p` does.

Every process's fds are read from /proc (a socket's link is "socket:[INODE]",
the inode sock_diag reports), and processes are grouped by network
namespace, so each namespace is dumped once. The socket options that
sock_diag does not report (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_NODELAY) are read
from a duplicate of the holder's fd taken with pidfd_getfd(2) (5.6+, needs
ptrace access: root): getsockopt() on the duplicate reads the very socket,
and closing the duplicate leaves the holder's fd open.
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass, field

from ..procfs import socket_fds

# Syscall numbers past 424 are the same on every architecture (asm-generic).
_SYS_PIDFD_GETFD = 438
_libc: ctypes.CDLL | None = None


@dataclass
class Holder:
    pid: int
    fd: int
    comm: str


@dataclass
class Namespace:
    ino: int
    path: str  # /proc/<pid>/ns/net of one of its processes
    sockets: dict[int, Holder] = field(default_factory=dict)  # socket inode -> the first holder found


def namespaces(pids: set[int] | None = None) -> dict[int, Namespace]:
    """{netns inode: Namespace} of the running processes (only `pids` when
    given) with the sockets they hold. Processes that exit meanwhile are skipped."""
    out: dict[int, Namespace] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or (pids and int(name) not in pids):
            continue
        pid = int(name)
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            with open(f"/proc/{pid}/comm", errors="replace") as f:
                comm = f.read().rstrip("\n")
        except OSError:
            continue
        held = socket_fds(pid)
        if held is None:
            continue
        ns = out.get(ino)
        if ns is None:
            ns = out[ino] = Namespace(ino, f"/proc/{pid}/ns/net")
        for fd, inode in held:
            ns.sockets.setdefault(inode, Holder(pid, fd, comm))
    return out


@dataclass(frozen=True)
class Options:
    keepalive: bool
    keepalive_idle_s: int  # TCP_KEEPIDLE in force (the netns default when not set on the socket)
    nodelay: bool


def options(holder: Holder) -> Options | None:
    """The holder's socket options, or None when its fd cannot be taken
    (the process or fd is gone, no ptrace access, a kernel before 5.6)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(holder.pid)
    except (OSError, AttributeError):
        return None
    try:
        fd = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, holder.fd, 0)
        if fd < 0:
            return None
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return None
        try:
            return Options(
                keepalive=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
                keepalive_idle_s=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                nodelay=bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
            )
        except OSError:
            return None
        finally:
            sock.close()
    finally:
        os.close(pidfd)


