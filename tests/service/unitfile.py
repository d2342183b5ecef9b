"""The unit file as the tests read it, and how they run what it describes."""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "connscope.service"
INSTALL = REPO / "scripts" / "install.sh"

# The command the service-shaped tests run the agent with: the unit's own.
AGENT_CMD = (str(REPO / "connscope"), "run")


def port_filter(port: int) -> tuple[str, ...]:
    """Only records with this port at either end (`trace` and `run` spell it alike)."""
    return ("--port", str(port))

# capability name -> bit (linux/capability.h)
CAP_BITS = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def directives(path: Path = UNIT) -> dict[str, list[str]]:
    """Key -> every value assigned in the file, in order (systemd keys repeat)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_caps(path: Path = UNIT) -> list[str]:
    """The capabilities AmbientCapabilities= grants, e.g. ['CAP_BPF', ...]."""
    return [c for v in directives(path)["AmbientCapabilities"] for c in v.split()]


def cap_mask(caps: list[str]) -> int:
    return sum(1 << CAP_BITS[c] for c in caps)


def setpriv_argv(user: str, caps: list[str]) -> list[str]:
    """setpriv as systemd starts the unit: the user, these ambient caps and nothing else."""
    spec = ",".join(["-all"] + ["+" + c.removeprefix("CAP_").lower() for c in caps])
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
            f"--inh-caps={spec}", f"--ambient-caps={spec}", f"--bounding-set={spec}", "--no-new-privs"]


class TempUser:
    """A system user for one test, removed again even when the test fails."""

    def __init__(self) -> None:
        self.name = f"cs-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", self.name], check=True, capture_output=True)
        self.uid = pwd.getpwnam(self.name).pw_uid

    def remove(self) -> None:
        """Deletes the user (the test has already stopped its processes by pid)."""
        subprocess.run(["userdel", self.name], capture_output=True)


def status_fields(pid: int, proc: str = "/proc") -> dict[str, str]:
    """/proc/PID/status as a dict (Uid, CapEff, NoNewPrivs, Seccomp ...)."""
    with open(f"{proc}/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def is_root() -> bool:
    return os.geteuid() == 0
