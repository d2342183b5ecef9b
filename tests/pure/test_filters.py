import socket

from agent.decode import layout as L
from agent.filters import EventFilter

from .factories import event


def test_empty_filter_matches_everything():
    f = EventFilter.build()
    assert f.empty and f.match(event())


def test_pid_comm_and_port_either_end():
    f = EventFilter.build(pids=[4242], comms=["curl"], ports=[40000])
    assert f.match(event())
    assert f.match(event(sport=1, dport=40000))
    assert not f.match(event(sport=1, dport=2))
    assert not f.match(event(pid=1))
    assert not f.match(event(comm=b"wget".ljust(16, b"\0")))


def test_family_flags():
    v6 = event(family=socket.AF_INET6)
    assert EventFilter.build(ipv6=True).match(v6) and not EventFilter.build(ipv4=True).match(v6)
    assert EventFilter.build(ipv4=True, ipv6=True).match(v6)


def test_failures_only():
    f = EventFilter.build(failures_only=True)
    assert f.match(event(err=111))
    assert f.match(event(flags=L.F_ABORTED))
    assert not f.match(event())
    assert not f.match(event(type=L.EV_ACCEPT))
    assert f.match(event(type=L.EV_CLOSE, closed_by=L.CLOSED_BY_RESET))
    assert f.match(event(type=L.EV_CLOSE, err=110))
    assert not f.match(event(type=L.EV_CLOSE, closed_by=L.CLOSED_BY_PEER))
