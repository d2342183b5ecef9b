"""`socket` records: one live connection as `connscope sockets` shows it.

Built from a sock_diag dump of a namespace (ports/live.py) and the process
holding each socket (ports/owners.py); schema v1, type "socket".
"""

from __future__ import annotations

from ..ports.live import LiveSocket
from ..ports.owners import Holder, Options
from ..procfs import cgroup_id
from .build import FAMILY, RecordBuilder


def diagnoses(s: LiveSocket, opts: Options | None, inbound: bool, idle_threshold_s: float) -> list[str]:
    """The diagnoses one look at a socket can make (the agent's scans also
    need several looks for a backlog)."""
    out = []
    idle_ms = s.idle_ms
    if (not inbound and s.state == "ESTABLISHED" and idle_ms is not None and idle_ms >= idle_threshold_s * 1000):
        keepalive = opts.keepalive if opts else s.keepalive
        # keepalive on, but its first probe comes after the threshold
        late = opts is not None and opts.keepalive and opts.keepalive_idle_s > idle_threshold_s
        if keepalive is False or late:
            out.append("idle_without_keepalive")
    return out


def socket_record(builder: RecordBuilder, ts: str, netns: int, s: LiveSocket, holder: Holder | None,
                  opts: Options | None, inbound: bool, idle_threshold_s: float) -> dict:
    pid = holder.pid if holder else 0
    rec = builder.base("socket", ts, pid, holder.comm if holder else "", cgroup_id(pid) if pid else 0,
                       "fd" if holder else "unknown")
    rec.update(
        family=FAMILY.get(s.family, str(s.family)), state=s.state, saddr=s.saddr, sport=s.sport, daddr=s.daddr,
        dport=s.dport, direction="inbound" if inbound else "outbound", netns=netns,
        recv_q=s.recv_q, send_q=s.send_q, rtt_us=s.rtt_us, min_rtt_us=s.min_rtt_us, mss=s.mss,
        bytes_acked=s.bytes_acked, bytes_received=s.bytes_received, idle_ms=s.idle_ms,
        last_send_ms=s.last_send_ms, last_recv_ms=s.last_recv_ms,
        keepalive=opts.keepalive if opts else s.keepalive,
        keepalive_idle_s=opts.keepalive_idle_s if opts and opts.keepalive else None,
        nodelay=opts.nodelay if opts else None,
        diagnoses=diagnoses(s, opts, inbound, idle_threshold_s),
    )
    return rec
