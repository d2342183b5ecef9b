"""CgroupResolver and ProcessInfo against real cgroups and real processes.

The test makes its own cgroups under one test slice in the v2 hierarchy, named
like a systemd service and like a docker container, moves a `sleep 30` into
each, and checks the resolver against the kernel's own answers: the
directory's inode and the "0::" line of /proc/PID/cgroup. Everything it makes
is removed even when it fails.
"""

import errno
import os
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from agent import procfs
from agent.enrich import CgroupResolver, ProcessInfo, find_cgroup2

MOUNT = find_cgroup2()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (creates cgroups)"),
    pytest.mark.skipif(MOUNT is None, reason="no cgroup2 mount in /proc/self/mountinfo"),
]
NONE = {"cgroup_path": None, "unit": None, "container_id": None, "runtime": None, "pod_uid": None}


def _rmdir(path, timeout=5.0):
    """A cgroup can stay busy for a moment after its last task is reaped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _remove_tree(top):
    """rmdir innermost first (bottom-up walk)."""
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        _rmdir(dirpath)


@pytest.fixture(scope="module", autouse=True)
def _sweep_stale():
    """Remove test slices an earlier crashed run left behind (rmdir refuses a
    populated cgroup, so a live test's slice survives)."""
    for entry in os.scandir(MOUNT[0]):
        if entry.name.startswith("cstest-") and entry.is_dir(follow_symlinks=False):
            try:
                _remove_tree(entry.path)
            except OSError:
                pass
    yield


class Lab:
    def __init__(self):
        self.root = MOUNT[0]
        self.slice = f"cstest-{secrets.token_hex(4)}.slice"
        self.service = f"cstest-{secrets.token_hex(4)}.service"
        self.container_id = secrets.token_hex(32)
        self.scope = f"docker-{self.container_id}.scope"
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []

    def mkdir(self, *parts):
        path = os.path.join(self.root, *parts)
        os.mkdir(path)
        self.dirs.append(path)
        return path

    def spawn_in(self, cgroup_dir, argv=("sleep", "30")):
        proc = subprocess.Popen(list(argv))
        self.procs.append(proc)
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        # Popen returns once exec closed its error pipe, a moment before the
        # new program's argv is readable in /proc/PID/cmdline
        deadline = time.monotonic() + 5
        while not procfs.read(f"/proc/{proc.pid}/cmdline") and time.monotonic() < deadline:
            time.sleep(0.01)
        return proc

    def close(self):
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        for path in reversed(self.dirs):
            _rmdir(path)


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _proc_cgroup_path(pid):
    text = procfs.read(f"/proc/{pid}/cgroup")
    return next(line[3:] for line in text.splitlines() if line.startswith("0::"))


def test_resolve_real_cgroups(lab):
    # Created, and its first walk done, before the cgroups exist: it must find
    # them through a rescan on miss. The clock is the test's, so the rate limit
    # is checked exactly without sleeping.
    now = [100.0]
    resolver = CgroupResolver(clock=lambda: now[0])
    root_id = os.stat(MOUNT[0]).st_ino
    assert resolver.resolve(root_id) == {**NONE, "cgroup_path": "/"}
    assert resolver.scans == 1

    lab.mkdir(lab.slice)
    service_dir = lab.mkdir(lab.slice, lab.service)
    scope_dir = lab.mkdir(lab.slice, lab.scope)
    service_proc = lab.spawn_in(service_dir)
    scope_proc = lab.spawn_in(scope_dir)

    service_id = procfs.cgroup_id(service_proc.pid)
    scope_id = procfs.cgroup_id(scope_proc.pid)
    assert service_id == os.stat(service_dir).st_ino != 0
    assert scope_id == os.stat(scope_dir).st_ino != 0
    assert _proc_cgroup_path(service_proc.pid) == f"/{lab.slice}/{lab.service}"

    # Within the interval a miss does not rescan, and is not cached either.
    now[0] += 0.5
    assert resolver.resolve(service_id) == NONE
    assert resolver.scans == 1
    now[0] += 0.6
    service = resolver.resolve(service_id)
    assert resolver.scans == 2
    assert service == {"cgroup_path": f"/{lab.slice}/{lab.service}", "unit": lab.service,
                       "container_id": None, "runtime": None, "pod_uid": None}
    assert service["cgroup_path"] == _proc_cgroup_path(service_proc.pid)
    assert resolver.resolve(scope_id) == {
        "cgroup_path": f"/{lab.slice}/{lab.scope}", "unit": lab.scope,
        "container_id": lab.container_id, "runtime": "docker", "pod_uid": None}
    assert resolver.path(scope_id) == _proc_cgroup_path(scope_proc.pid)
    assert resolver.scans == 2

    # Unknown ids: at most one walk per interval, however many arrive.
    unknown = 1 << 62
    for _ in range(1000):
        assert resolver.resolve(unknown) == NONE
    assert resolver.scans == 2
    now[0] += 1.0
    assert resolver.resolve(unknown) == NONE
    assert resolver.resolve(0) == NONE
    assert resolver.scans == 3


def test_resolver_bounded_and_fresh(lab):
    lab.mkdir(lab.slice)
    service_dir = lab.mkdir(lab.slice, lab.service)
    service_id = os.stat(service_dir).st_ino
    assert CgroupResolver().path(service_id) == f"/{lab.slice}/{lab.service}"
    capped = CgroupResolver(max_entries=1)
    assert capped.path(os.stat(MOUNT[0]).st_ino) == "/"
    assert capped.truncated and len(capped._index) == 1


def test_slow_walk_stretches_rescan_interval():
    """A walk that took 0.5 s (a huge tree) allows the next one 5 s after it ended, not 1 s."""
    times = iter([0.0, 0.5, 5.4, 5.5, 5.5, 5.5])
    resolver = CgroupResolver(clock=lambda: next(times))
    unknown = 1 << 62
    assert resolver.path(unknown) is None and resolver.scans == 1   # walk from 0.0 to 0.5
    assert resolver.path(unknown) is None and resolver.scans == 1   # 5.4: too early
    assert resolver.path(unknown) is None and resolver.scans == 2   # 5.5: walks again


def test_process_info(lab):
    lab.mkdir(lab.slice)
    proc = lab.spawn_in(lab.mkdir(lab.slice, lab.service))
    info = ProcessInfo()
    sleep = os.path.realpath(shutil.which("sleep"))
    assert sleep.endswith("/sleep")
    assert info.get(proc.pid) == {"cmdline": "sleep 30", "exe": sleep}
    assert info.get(proc.pid) == {"cmdline": "sleep 30", "exe": sleep}  # cached

    dead = subprocess.Popen(["true"])
    dead.wait()
    assert info.get(dead.pid) == {"cmdline": None, "exe": None}
    assert info.get(0) == info.get(-1) == {"cmdline": None, "exe": None}


def test_process_info_odd_cmdline(lab):
    """Non-UTF-8 argv is decoded with U+FFFD (JSON-safe), and long argv cut at 512."""
    code = "import time; time.sleep(30)"
    proc = lab.spawn_in(lab.mkdir(lab.slice), [sys.executable, "-c", code, b"\xff\xfe", "a" * 1000])
    got = ProcessInfo().get(proc.pid)
    want = " ".join([sys.executable, "-c", code, "\ufffd\ufffd", "a" * 1000])[:512]
    assert got["cmdline"] == want and len(want) == 512
    assert got["exe"] == os.path.realpath(sys.executable)
