"""cgroup v2 id -> path -> systemd unit / container / pod.

A record's `cgroup_id` is what bpf_get_current_cgroup_id() returns: the inode
number of the cgroup's directory in the v2 hierarchy. The kernel offers no
id -> path lookup to user space (short of open_by_handle_at), so the resolver
walks the v2 tree once and keeps an inode -> path index. A miss (a cgroup
created since the walk) triggers a new walk, but at most once per
`rescan_interval` (and at most 10% of the time when the tree is so large that a
walk is slow: about 10 us per cgroup here), so a stream of unknown ids cannot
turn into a stream of tree walks. cgroup ids are 64-bit and not reused, so a hit can be cached for
good; a miss is never cached, because the id may simply be newer than the walk.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from typing import Callable

from .. import procfs
from ..procfs import find_cgroup2  # noqa: F401  (re-exported: agent.enrich.find_cgroup2)

FIELDS = ("unit", "container_id", "runtime", "pod_uid")

_UNIT = re.compile(r"^.+\.(?:service|scope|socket|mount|swap)$")
_HEX64 = r"([0-9a-f]{64})"
# Component patterns that name a container, with its runtime. "libpod-conmon-"
# and "crio-conmon-" (the monitor process, not the container) cannot match,
# because "conmon-" is not hex.
_CONTAINER = [
    (re.compile(rf"^docker-{_HEX64}\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-{_HEX64}\.scope$"), "containerd"),
    (re.compile(rf"^crio-{_HEX64}(?:\.scope)?$"), "cri-o"),
    (re.compile(rf"^libpod-{_HEX64}(?:\.scope)?$"), "podman"),
]
_BARE_ID = re.compile(rf"^{_HEX64}$")  # cgroupfs drivers: /docker/<id>, /kubepods/.../<id>
# systemd driver: kubepods-burstable-pod<uid>.slice, with the uid's dashes
# escaped to "_" (a dash means nesting in slice names); cgroupfs: pod<uid>.
# Static pods have a 32-hex uid without dashes.
_POD_SLICE = re.compile(r"^kubepods(?:-[a-z]+)?-pod([0-9a-f_]{32,36})\.slice$")
_POD_DIR = re.compile(r"^pod([0-9a-f-]{32,36})$")


def describe(path: str | None) -> dict:
    """What a cgroup path says about its processes. The deepest match wins
    (a container's own nested systemd units, docker-in-docker)."""
    out = dict.fromkeys(FIELDS)
    parts = [p for p in (path or "").split("/") if p]
    in_kube = any(p == "kubepods" or p.startswith(("kubepods-", "kubepods.")) for p in parts)
    for i, part in enumerate(parts):
        if _UNIT.match(part):
            out["unit"] = part
        if in_kube and (m := _POD_SLICE.match(part) or _POD_DIR.match(part)):
            out["pod_uid"] = m.group(1).replace("_", "-")
        for pattern, runtime in _CONTAINER:
            if m := pattern.match(part):
                out["container_id"], out["runtime"] = m.group(1), runtime
                break
        else:
            if (m := _BARE_ID.match(part)) and (in_kube or (i and parts[i - 1] == "docker")):
                # Under kubepods the cgroupfs layout does not say which runtime.
                out["container_id"], out["runtime"] = m.group(1), "kubepods" if in_kube else "docker"
    if in_kube and out["runtime"] is None and out["pod_uid"] is not None:
        out["runtime"] = "kubepods"
    return out


class CgroupResolver:
    """cgroup id -> path relative to the v2 root ("/" for the root cgroup),
    and -> path plus describe(). Thread-safe; lookups of known ids cost a dict
    access."""

    def __init__(self, root: str | None = None, *, rescan_interval: float = 1.0,
                 max_entries: int = 100_000, cache_size: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        prefix = "/"
        if root is None and (mount := find_cgroup2()):
            root, prefix = mount
        self.root, self._prefix = root, prefix.rstrip("/")
        self.rescan_interval, self.max_entries = rescan_interval, max_entries
        self._clock = clock
        self._index: dict[int, str] = {}
        self._next_scan: float | None = None  # None: never walked yet
        self._resolved: OrderedDict[int, dict] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.scans = 0          # tree walks so far (tests check the rate limit)
        self.truncated = False  # the last walk stopped at max_entries

    def _scan(self) -> None:
        """Rebuild the index from scratch (so removed cgroups drop out).
        Directories only, no symlinks followed, inode from readdir (no stat)."""
        started = self._clock()
        index: dict[int, str] = {}
        self.truncated = False
        try:
            index[os.stat(self.root).st_ino] = self._prefix or "/"
        except OSError:
            pass
        stack = [(self.root, self._prefix)]
        while stack and not self.truncated:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        if len(index) >= self.max_entries:
                            self.truncated = True
                            break
                        path = f"{rel}/{entry.name}"
                        index[entry.inode()] = path
                        stack.append((entry.path, path))
            except OSError:
                continue  # removed while we walked
        self._index = index
        now = self._clock()
        self._next_scan = now + max(self.rescan_interval, 10 * (now - started))
        self.scans += 1

    def path(self, cgroup_id: int) -> str | None:
        """The cgroup's path, or None when it is unknown (id 0, a cgroup
        removed before the walk, or one newer than the last allowed walk)."""
        if not cgroup_id or self.root is None:
            return None
        with self._lock:
            found = self._index.get(cgroup_id)
            if found is None and (self._next_scan is None or self._clock() >= self._next_scan):
                self._scan()
                found = self._index.get(cgroup_id)
            return found

    def resolve(self, cgroup_id: int) -> dict:
        """{"cgroup_path", "unit", "container_id", "runtime", "pod_uid"},
        all None when the id is unknown. Found ids are kept in a bounded LRU."""
        with self._lock:
            hit = self._resolved.get(cgroup_id)
            if hit is not None:
                self._resolved.move_to_end(cgroup_id)
                return dict(hit)
        path = self.path(cgroup_id)
        result = {"cgroup_path": path, **describe(path)}
        if path is not None:
            with self._lock:
                self._resolved[cgroup_id] = result
                if len(self._resolved) > self._cache_size:
                    self._resolved.popitem(last=False)
        return dict(result)
