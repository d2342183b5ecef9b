"""Small /proc readers shared by layers that must not depend on each other."""

from __future__ import annotations

import functools
import os
import re



def read(path: str) -> str | None:
    """A /proc file as text; process-controlled bytes (comm, argv) may be any
    bytes, so undecodable ones become U+FFFD rather than an exception."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def socket_fds(pid: int) -> list[tuple[int, int]] | None:
    """(fd, socket inode) of every socket a process holds (its fd links read
    "socket:[INODE]", the inode sock_diag reports); None when its fds cannot
    be read (it exited, or no access)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    out = []
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            out.append((int(fd), int(link[8:-1])))
    return out


def cgroup_id(pid: int) -> int:
    """cgroup v2 id of a process: the inode of its cgroup directory, which is
    what bpf_get_current_cgroup_id() returns. 0 when unknown."""
    text = read(f"/proc/{pid}/cgroup") or ""
    path = next((line.split(":", 2)[2].strip() for line in text.splitlines() if line.startswith("0::")), None)
    found = _cgroup2_mount()
    if path is None or found is None:
        return 0
    mount, subtree = found  # the mount may show only a subtree of the hierarchy
    subtree = subtree.rstrip("/")
    if subtree and not path.startswith(subtree + "/") and path != subtree:
        return 0
    try:
        return os.stat(mount + path[len(subtree):]).st_ino
    except OSError:
        return 0


@functools.cache
def _cgroup2_mount() -> tuple[str, str] | None:
    return find_cgroup2()  # mounts do not move under a running agent


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_cgroup2(mountinfo: str | None = None) -> tuple[str, str] | None:
    """(mount point, hierarchy path it shows) of the cgroup2 mount, from
    /proc/self/mountinfo: /sys/fs/cgroup/unified on hybrid hosts,
    /sys/fs/cgroup on unified ones, anything elsewhere. A mount of the whole
    hierarchy (root "/") is preferred over a bind mount of a subtree."""
    if mountinfo is None:
        mountinfo = read("/proc/self/mountinfo") or ""
    found = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if sep and len(fields) >= 5 and tail.split()[:1] == ["cgroup2"]:
            found.append((_unescape(fields[4]), _unescape(fields[3])))
    return min(found, key=lambda m: m[1] != "/", default=None)


@functools.cache
def kernel_hz() -> int | None:
    """CONFIG_HZ, the tick jiffies count (tcp_sock.keepalive_time is in
    jiffies); None when the kernel's config is not readable."""
    import gzip
    import platform

    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        text = read(f"/boot/config-{platform.release()}") or ""
    for line in text.splitlines():
        if line.startswith("CONFIG_HZ="):
            return int(line.partition("=")[2])
    return None
