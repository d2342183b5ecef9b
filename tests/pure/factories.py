"""Kernel records made by hand, for tests that need no kernel."""

import socket

from agent.decode import layout as L
from agent.decode.events import ConnEvent


def event(**kw) -> ConnEvent:
    base = dict(
        ts_ns=2_000_000_000, start_ns=1_000_000_000, established_ns=1_000_250_000, end_ns=0,
        skaddr=0xFFFF888012345678, cgroup_id=1, bytes_sent=0, bytes_received=0, srtt_us=0, min_rtt_us=0,
        keepalive_idle=0, mss=0, health=0, pid=4242, tid=4243,
        saddr=socket.inet_pton(socket.AF_INET, "169.254.7.1") + bytes(12),
        daddr=socket.inet_pton(socket.AF_INET, "169.254.7.2") + bytes(12),
        syn_retransmits=0, synack_retransmits=0, retransmits=0, err=0, resets_sent=0, resets_received=0,
        sport=40000, dport=8080, family=socket.AF_INET, type=L.EV_CONNECT, pid_source=L.PID_SRC_CONNECT,
        direction=L.DIR_OUTBOUND, closed_by=0, flags=L.F_ESTABLISHED, comm=b"curl".ljust(16, b"\0"),
    )
    base.update(kw)
    return ConnEvent(**base)
