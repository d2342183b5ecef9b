"""One call that adds the readable names to a summary or diagnosis record."""

from __future__ import annotations

from typing import Iterable

from .cgroups import CgroupResolver
from .processes import ProcessInfo


class Enricher:
    """Best effort and cached: a process gone before its first summary keeps
    only the comm and cgroup id the kernel captured."""

    def __init__(self, cmdline: str = "scrubbed", sensitive_words: Iterable[str] = ()) -> None:
        self.cgroups = CgroupResolver()
        self.processes = ProcessInfo(cmdline=cmdline, sensitive_words=sensitive_words)

    def fields(self, pid: int, cgroup_id: int) -> dict:
        out = dict(self.cgroups.resolve(cgroup_id)) if cgroup_id else {}
        if pid:
            out.update(self.processes.get(pid))
        return out
