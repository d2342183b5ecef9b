"""A real systemd (PID 1 of a systemd-nspawn container) to run the unit under.

The machine's own PID 1 is not systemd, so the tests boot one: the host's
/usr, a tmpfs root (--volatile=yes), /etc as a throw-away overlay of the
host's, its own network namespace (loopback only) and the install tree the
test made, bound at the same path. The kernel is the host's, so the agent
inside sees every TCP event and its records carry host pids.

nspawn is not under a systemd unit here, so it runs with --keep-unit
--register=no in a cgroup of its own, which close() removes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

CGROUP_ROOTS = [Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup")]


def _cgroup_roots() -> list[Path]:
    """Writable cgroup hierarchies nspawn uses: cgroup2 and the named systemd one (hybrid hosts)."""
    roots = []
    for r in CGROUP_ROOTS:
        if (r / "cgroup.procs").exists() and os.access(r, os.W_OK) and not any(r.is_relative_to(x) for x in roots):
            roots.append(r)
    return roots


class Container:
    def __init__(self, bind: Path, boot_timeout: float = 300.0):
        self.name = f"cs-test-{uuid.uuid4().hex[:8]}"
        self.cgroups = [r / f"connscope-test-{self.name}" for r in _cgroup_roots()]
        for cg in self.cgroups:
            cg.mkdir()
        self.log = tempfile.NamedTemporaryFile(prefix="connscope-nspawn.", suffix=".log")
        self.leader: int | None = None

        def into_cgroups() -> None:
            for cg in self.cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()))

        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--directory=/", "--volatile=yes", "--register=no", "--keep-unit",
             f"--machine={self.name}", "--boot", "--private-network",
             "--capability=CAP_BPF,CAP_PERFMON", "--system-call-filter=bpf perf_event_open",
             "--overlay=/etc::/etc", f"--bind={bind}", "--", "systemd.unit=basic.target"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=into_cgroups)
        try:
            self._wait_booted(boot_timeout)
        except BaseException:
            self.close()
            raise

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.leader is None:
            assert self.proc.poll() is None, f"nspawn exited {self.proc.returncode}: {self.boot_log()}"
            assert time.monotonic() < deadline, f"no systemd in the container: {self.boot_log()}"
            self.leader = self._find_init()
            time.sleep(0.1)
        # Polled, not `--wait` under one timeout: on a loaded 2-core machine the
        # boot has taken over 60 s (CI errored here once), and a state seen on
        # the way (starting, its job queue) says where it stands if it never ends.
        state = ""
        while state not in ("running", "degraded"):
            assert self.proc.poll() is None, f"nspawn exited {self.proc.returncode}: {self.boot_log()}"
            if time.monotonic() > deadline:
                jobs = self.run("systemctl", "list-jobs", "--no-pager", check=False, timeout=30).stdout
                raise AssertionError(f"container still {state!r} after {timeout:.0f} s; jobs:\n{jobs}"
                                     f"{self.boot_log()}")
            state = self.run("systemctl", "is-system-running", check=False, timeout=60).stdout.strip()
            if state not in ("running", "degraded"):
                time.sleep(0.2)

    def _find_init(self) -> int | None:
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return None

    def boot_log(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def run(self, *argv, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Runs argv inside the container (all its namespaces)."""
        cp = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *map(str, argv)],
                            capture_output=True, text=True, timeout=timeout)
        assert not check or cp.returncode == 0, f"{argv}: {cp.returncode} {cp.stderr}"
        return cp

    def netns_argv(self, *argv) -> list[str]:
        """argv run in the container's network namespace only: a host process, host pid."""
        return ["nsenter", "-t", str(self.leader), "-n", *map(str, argv)]

    def write(self, path: str, text: str) -> None:
        self.run("mkdir", "-p", os.path.dirname(path))
        subprocess.run(["nsenter", "-t", str(self.leader), "-a", "tee", path], input=text, text=True,
                       capture_output=True, check=True)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        cp = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in cp.stdout.splitlines())

    def close(self) -> None:
        """Powers off (SIGKILL to its init after 20 s), then removes the cgroups."""
        if self.proc.poll() is None and self.leader:
            subprocess.run(["nsenter", "-t", str(self.leader), "-a", "systemctl", "poweroff"],
                           capture_output=True, timeout=20)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            if self.leader:
                os.kill(self.leader, signal.SIGKILL)  # ends every process of its pid namespace
            self.proc.kill()
            self.proc.wait(20)
        for cg in self.cgroups:
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [cg]:
                try:
                    d.rmdir()
                except OSError:
                    pass
        self.log.close()
