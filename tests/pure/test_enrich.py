"""describe() on real-world cgroup paths, and the cgroup2 mount lookup on real
mountinfo layouts (hybrid, unified, escaped, bind-mounted subtree)."""

import pytest

from agent.enrich.cgroups import describe, find_cgroup2

H = "3f5a1c0e9b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf0246a"  # 64 hex
UID = "8d1f2c3e-4b5a-6978-8a9b-0c1d2e3f4a5b"
UID_ = UID.replace("-", "_")
STATIC_UID = "6e3b8a5c2d1f0e9d8c7b6a5948372615"

CASES = [
    # systemd
    ("/system.slice/nginx.service", "nginx.service", None, None, None),
    ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", None, None, None),
    ("/init.scope", "init.scope", None, None, None),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-4242.scope",
     "app-gnome-firefox-4242.scope", None, None, None),
    ("/system.slice/docker.service", "docker.service", None, None, None),
    ("/system.slice/containerd.service", "containerd.service", None, None, None),
    # docker
    (f"/system.slice/docker-{H}.scope", f"docker-{H}.scope", H, "docker", None),
    (f"/docker/{H}", None, H, "docker", None),
    (f"/system.slice/docker-{H}.scope/system.slice/nginx.service", "nginx.service", H, "docker", None),
    # containerd
    (f"/system.slice/cri-containerd-{H}.scope", f"cri-containerd-{H}.scope", H, "containerd", None),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{H}.scope",
     f"cri-containerd-{H}.scope", H, "containerd", UID),
    # cri-o
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{H}.scope",
     f"crio-{H}.scope", H, "cri-o", UID),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{H}.scope",
     f"crio-conmon-{H}.scope", None, "kubepods", UID),
    # podman
    (f"/machine.slice/libpod-{H}.scope", f"libpod-{H}.scope", H, "podman", None),
    (f"/machine.slice/libpod-{H}.scope/container", f"libpod-{H}.scope", H, "podman", None),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{H}.scope",
     f"libpod-{H}.scope", H, "podman", None),
    (f"/machine.slice/libpod-conmon-{H}.scope", f"libpod-conmon-{H}.scope", None, None, None),
    (f"/libpod_parent/libpod-{H}", None, H, "podman", None),
    # kubepods, cgroupfs driver: the path does not say which runtime
    (f"/kubepods/burstable/pod{UID}/{H}", None, H, "kubepods", UID),
    (f"/kubepods/pod{UID}/{H}", None, H, "kubepods", UID),
    (f"/kubepods/besteffort/pod{UID}", None, None, "kubepods", UID),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
     None, None, "kubepods", UID),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/docker-{H}.scope",
     f"docker-{H}.scope", H, "docker", STATIC_UID),
    # negatives
    ("/", None, None, None, None),
    ("/user.slice", None, None, None, None),
    ("/user.slice/user-1000.slice", None, None, None, None),
    ("/kubepods.slice", None, None, None, None),
    (f"/{H}", None, None, None, None),                       # bare id outside docker/kubepods
    (f"/system.slice/pod{UID}", None, None, None, None),      # pod dir outside kubepods
    (f"/system.slice/docker-{H[:63]}.scope", f"docker-{H[:63]}.scope", None, None, None),  # 63 hex
    (f"/system.slice/docker-{H.upper()}.scope", f"docker-{H.upper()}.scope", None, None, None),
    ("", None, None, None, None),
    (None, None, None, None, None),
]


@pytest.mark.parametrize("path,unit,container_id,runtime,pod_uid", CASES)
def test_describe(path, unit, container_id, runtime, pod_uid):
    assert describe(path) == {"unit": unit, "container_id": container_id, "runtime": runtime, "pod_uid": pod_uid}


def test_pod_uid_normalised_with_dashes():
    systemd = describe(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{H}.scope")
    cgroupfs = describe(f"/kubepods/burstable/pod{UID}/{H}")
    assert systemd["pod_uid"] == cgroupfs["pod_uid"] == "8d1f2c3e-4b5a-6978-8a9b-0c1d2e3f4a5b"


HYBRID = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
"""
UNIFIED = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
# A container that sees a bind mount of its own subtree first, then the whole tree.
BIND_THEN_FULL = """\
41 31 0:38 /system.slice/x.service /mnt/my\\040cg rw,relatime - cgroup2 cgroup2 rw
42 31 0:38 / /mnt/all rw,relatime - cgroup2 cgroup2 rw
"""


def test_find_cgroup2_layouts():
    assert find_cgroup2(HYBRID) == ("/sys/fs/cgroup/unified", "/")
    assert find_cgroup2(UNIFIED) == ("/sys/fs/cgroup", "/")
    assert find_cgroup2(BIND_THEN_FULL) == ("/mnt/all", "/")
    assert find_cgroup2(BIND_THEN_FULL.splitlines()[0]) == ("/mnt/my cg", "/system.slice/x.service")
    assert find_cgroup2(HYBRID.replace("cgroup2", "cgroup")) is None
    assert find_cgroup2("") is None
