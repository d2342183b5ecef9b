"""What a host needs before the agent can trace, checked one item at a time.

Each check names what it looked at and, when it fails, the fix. `connscope
check` prints them before loading the programs, so a host that lacks
headers or tracefs gets that line instead of a compiler error.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from .privileges import degraded_caps, effective_caps, missing_caps


@dataclass(frozen=True)
class Item:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _caps() -> Item:
    missing = missing_caps()
    detail = f"uid {os.geteuid()}, CapEff {effective_caps():#x}"
    if missing:
        return Item("privileges", False, f"{detail}; missing {', '.join(missing)}",
                    "run as root, or grant CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH (see systemd/connscope.service)")
    return Item("privileges", True, detail)


def _optional_caps() -> list[Item]:
    where = {"CAP_SYS_ADMIN": "systemd/dropins/netns-ports.conf adds it"}
    return [Item(name, False, f"without it: {lost}",
                 f"grant {name} ({where.get(name, 'AmbientCapabilities= in systemd/connscope.service')})",
                 required=False)
            for name, lost in degraded_caps()]


def _tracefs() -> Item:
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(root, "events/sock/inet_sock_set_state/format")):
            return Item("tracefs", True, f"{root} (sock:inet_sock_set_state present)")
    return Item("tracefs", False, "no tracefs with sock:inet_sock_set_state",
                "mount -t tracefs tracefs /sys/kernel/tracing")


def _headers() -> Item:
    kver = platform.release()
    build, source = f"/lib/modules/{kver}/build", f"/lib/modules/{kver}/source"
    ok = os.path.exists(f"{build}/include/generated/autoconf.h") and (
        os.path.exists(f"{source}/include/linux/kconfig.h") or os.path.exists(f"{build}/include/linux/kconfig.h"))
    target = os.path.realpath(build)
    if ok:
        note = "" if kver in target else " (nearest Debian headers; no struct offsets are read from them)"
        return Item("headers", True, f"{build} -> {target}{note}")
    return Item("headers", False, f"{build} lacks generated headers (BCC compiles against them)",
                "install linux-headers for this kernel, or run scripts/setup.sh (links the nearest Debian headers)")


def _btf() -> Item:
    path = "/sys/kernel/btf/vmlinux"
    if os.access(path, os.R_OK):
        return Item("btf", True, f"{path} ({os.path.getsize(path) >> 10} KiB)", required=False)
    return Item("btf", False, f"{path} not readable", "a kernel built with CONFIG_DEBUG_INFO_BTF=y", required=False)


def _cgroup2() -> Item:
    from ..procfs import find_cgroup2
    root = find_cgroup2()
    if root:
        return Item("cgroup2", True, f"{root[0]} (cgroup and unit names)", required=False)
    return Item("cgroup2", False, "no cgroup2 mount: records keep cgroup_id but no unit names",
                "mount -t cgroup2 none /sys/fs/cgroup", required=False)


def host_items() -> list[Item]:
    return [_caps(), *_optional_caps(), _tracefs(), _headers(), _btf(), _cgroup2()]
