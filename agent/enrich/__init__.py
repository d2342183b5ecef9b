"""Turns the raw ids every record carries into names a person can read.

`cgroup_id` becomes a cgroup path plus what it says (systemd unit, container
id, runtime, Kubernetes pod uid); `pid` becomes its command line and
executable. Both are best effort and cached: a record is never delayed or
dropped because a name could not be found.
"""

from .cgroups import CgroupResolver, describe, find_cgroup2
from .enricher import Enricher
from .processes import ProcessInfo

__all__ = ["CgroupResolver", "Enricher", "ProcessInfo", "describe", "find_cgroup2"]
