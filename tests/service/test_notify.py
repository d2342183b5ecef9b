"""sd_notify datagrams, received on real AF_UNIX sockets (a path and an abstract name)."""

import os
import socket
import time
import uuid

import pytest

from agent.service.notify import Notifier, WatchdogPinger, watchdog_interval


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    """(NOTIFY_SOCKET value, bound datagram socket) as systemd would set them up."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        value = str(tmp_path / "notify")
        s.bind(value)
    else:
        name = f"connscope-test/{uuid.uuid4().hex}"
        s.bind(b"\0" + name.encode())
        value = "@" + name
    s.settimeout(2)
    yield value, s
    s.close()


def _recv(s: socket.socket) -> str:
    return s.recv(4096).decode()


def _nothing_queued(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        s.recv(4096)
        return False
    except BlockingIOError:
        return True
    finally:
        s.settimeout(2)


def test_each_message_is_one_exact_datagram(listener):
    value, s = listener
    n = Notifier({"NOTIFY_SOCKET": value})
    assert n.enabled
    assert n.ready("tracing; output=stdout")
    assert _recv(s) == "READY=1\nSTATUS=tracing; output=stdout"
    n.ready()
    assert _recv(s) == "READY=1"
    n.status("12 records/s\nlost 0")
    assert _recv(s) == "STATUS=12 records/s lost 0"  # a newline would forge another field
    n.watchdog()
    assert _recv(s) == "WATCHDOG=1"
    n.stopping()
    assert _recv(s) == "STOPPING=1"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = _recv(s).split("\n")
    assert first == "RELOADING=1"
    key, usec = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after
    assert n.errors == 0 and _nothing_queued(s)
    n.close()


def test_the_kernel_names_our_pid_as_sender(listener):
    """systemd's NotifyAccess=main matches SCM_CREDENTIALS' pid against the main pid."""
    value, s = listener
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    Notifier({"NOTIFY_SOCKET": value}).ready()
    msg, anc, _flags, _addr = s.recvmsg(4096, socket.CMSG_SPACE(12))
    assert msg == b"READY=1"
    (level, kind, data), = anc
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    assert int.from_bytes(data[:4], "little") == os.getpid()


def test_without_notify_socket_nothing_is_sent():
    n = Notifier({})
    assert not n.enabled
    assert n.ready("x") is False and n.watchdog() is False and n.reloading() is False
    assert n.errors == 0
    assert WatchdogPinger(n, interval=10).tick(0.0) is False


def test_a_dead_socket_is_counted_not_raised(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.ready() is False
    assert n.errors == 1 and n.last_error == f"notify {tmp_path / 'gone'}: No such file or directory"


def test_watchdog_interval_from_the_environment():
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # not ours
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_pinger_pings_at_half_the_interval_and_stops_with_the_loop(listener):
    value, s = listener
    n = Notifier({"NOTIFY_SOCKET": value})
    p = WatchdogPinger(n, interval=watchdog_interval({"WATCHDOG_USEC": "4000000"}))
    assert p.period == 2.0
    sent = [t for t in (100.0, 100.5, 101.9, 102.0, 103.0, 103.99, 104.0) if p.tick(t)]
    assert sent == [100.0, 102.0, 104.0]
    assert [_recv(s) for _ in sent] == ["WATCHDOG=1"] * 3
    # a stuck loop calls tick no more: nothing else was queued
    assert _nothing_queued(s) and p.sent == 3


def test_pinger_without_a_watchdog_is_inactive(listener):
    value, s = listener
    p = WatchdogPinger(Notifier({"NOTIFY_SOCKET": value}), interval=0)
    assert p.period is None
    assert not any(p.tick(t) for t in (0.0, 100.0, 1e6))
    assert _nothing_queued(s)
