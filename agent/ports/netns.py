"""Run a function inside another network namespace without moving the caller.

sock_diag and /proc/sys/net answer for the network namespace of the calling
*thread*. `in_netns()` starts a short-lived thread, moves only that thread into
the namespace with setns(2) and returns what the function returned (or raises
what it raised). The thread then exits, so no thread of the agent is ever left
in another namespace, and the caller's own namespace never changes.

Paths are anything setns(2) takes for a network namespace: /proc/<pid>/ns/net,
/run/netns/<name>, /var/run/docker/netns/<id>. Entering one needs
CAP_SYS_ADMIN (root).

Inside the thread, /proc/sys/net/* and netlink sockets created there belong to
the target namespace. /proc/net/* does not: it is a link to /proc/self/net,
the thread group leader's namespace (use /proc/thread-self/net there).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Any, Callable, TypeVar

from ..errors import ConnscopeError

CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc: ctypes.CDLL | None = None


class PortReadError(ConnscopeError):
    """TIME_WAIT sockets or port settings of a namespace could not be read.

    `netns` is the namespace path (None: the agent's own namespace) and
    `errno` the OS error number when there was one.
    """

    def __init__(self, message: str, netns: str | None = None, errno: int | None = None,
                 hint: str | None = None):
        super().__init__(message, hint)
        self.netns = netns
        self.errno = errno


def netns_label(netns: str | None) -> str:
    """How messages name a namespace: 'netns /run/netns/x' or 'the host netns'."""
    return f"netns {netns}" if netns else "the agent's own netns"


def _setns(fd: int, nstype: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, nstype)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _enter_error(path: str, e: OSError) -> PortReadError:
    what = {
        errno.ENOENT: "is gone (no such namespace)",
        errno.ESRCH: "is gone (the process exited)",
        errno.EPERM: "cannot be entered (needs CAP_SYS_ADMIN)",
        errno.EACCES: "cannot be opened (permission denied)",
        errno.EINVAL: "is not a network namespace",
    }.get(e.errno or 0, f"cannot be entered ({e.strerror or e})")
    hint = "run as root" if e.errno in (errno.EPERM, errno.EACCES) else None
    return PortReadError(f"netns {path} {what}", netns=path, errno=e.errno, hint=hint)


def _same_netns(fd: int) -> bool:
    try:
        own = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def in_netns(path: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call fn(*args, **kwargs) in a fresh thread inside the namespace at `path`.

    path None runs fn in a fresh thread of the caller's own namespace (a fresh
    thread all the same, so per-thread state such as an asyncio event loop is
    never shared with the caller). Failing to open or enter the namespace
    raises PortReadError naming the path; exceptions from fn propagate as they
    are.
    """
    fd = -1
    if path is not None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise _enter_error(path, e) from None
        if _same_netns(fd):
            # Our own namespace: no setns(2), which needs CAP_SYS_ADMIN even
            # for a no-op, so the service unit (without it) still counts the
            # TIME_WAIT sockets of every process in the host namespace.
            os.close(fd)
            fd = -1
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            if fd >= 0:
                _setns(fd, CLONE_NEWNET)
        except OSError as e:
            box["enter"] = e
            return
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    try:
        t = threading.Thread(target=worker, name="connscope-netns", daemon=True)
        t.start()
        t.join()
    finally:
        if fd >= 0:
            os.close(fd)
    if "enter" in box:
        raise _enter_error(path or "", box["enter"]) from None
    if "error" in box:
        raise box["error"]
    return box["value"]
