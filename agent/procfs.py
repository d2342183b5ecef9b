"""Small /proc readers shared by layers that must not depend on each other."""

from __future__ import annotations

import os

CGROUP2_MOUNTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")  # hybrid first, then unified


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cgroup_id(pid: int) -> int:
    """cgroup v2 id of a process: the inode of its cgroup directory, which is
    what bpf_get_current_cgroup_id() returns. 0 when unknown."""
    text = read(f"/proc/{pid}/cgroup") or ""
    path = next((line.split(":", 2)[2].strip() for line in text.splitlines() if line.startswith("0::")), None)
    if path is None:
        return 0
    for mount in CGROUP2_MOUNTS:
        try:
            return os.stat(mount + path).st_ino
        except OSError:
            continue
    return 0
