"""The live TCP sockets of a network namespace: what `ss -tni` shows.

One sock_diag dump asks for every connection that is not listening, closed
or in TIME_WAIT, with its struct tcp_info (INET_DIAG_INFO); another for the
listeners, whose Recv-Q is the accept queue's length and Send-Q its backlog
(inet_diag_get_info: sk_ack_backlog and sk_max_ack_backlog for LISTEN).

Keepalive is not in tcp_info: the socket's pending timer says it. An idle
established socket with SO_KEEPALIVE has its keepalive timer armed (timer 2,
`expires` ms until it fires); without it, no timer (0). A socket with data
in flight shows its retransmit or probe timer instead, and then whether
keepalive is on is not known from here (None).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from . import sockdiag as D
from .netns import in_netns

STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
          7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
TCP_LISTEN = 10
# every state but TIME_WAIT (ports/timewait.py), CLOSE and LISTEN
CONNECTED = sum(1 << s for s in STATES if s not in (6, 7, TCP_LISTEN))
TIMER_NONE, TIMER_RETRANSMIT, TIMER_KEEPALIVE, TIMER_TIME_WAIT, TIMER_PROBE = 0, 1, 2, 3, 4

# struct tcp_info (uapi linux/tcp.h): the fields read, at their offsets
# struct tcp_info (uapi linux/tcp.h) up to tcpi_min_rtt (4.10+): snd_mss @16,
# unacked @24, last_data_sent @44, last_data_recv @52, last_ack_recv @56,
# rtt @68, bytes_acked @120, bytes_received @128, min_rtt @148
_INFO = struct.Struct("<16xI4xI16xI4xII8xI48xQQ12xI")
# inet_diag_msg from idiag_expires: expires, rqueue, wqueue, uid, inode
_TAIL = struct.Struct("=IIIII")
_PORTS = struct.Struct(">HH")
_KEEPALIVE = {TIMER_NONE: False, TIMER_KEEPALIVE: True}  # else: another timer pending, not known
_ntop = socket.inet_ntop


class LiveSocket(NamedTuple):
    family: int
    state: str
    saddr: str
    sport: int
    daddr: str
    dport: int
    raw_saddr: bytes  # 16 bytes, IPv4 in the first 4: as the kernel's records hold addresses
    raw_daddr: bytes
    recv_q: int  # bytes received and not yet read by the application
    send_q: int  # bytes not yet acknowledged by the peer (sent or not)
    keepalive: bool | None  # from the pending timer; None while another timer is pending
    keepalive_in_ms: int | None  # until the next keepalive probe, when keepalive is on
    retransmits: int  # of the segment pending retransmission
    inode: int
    rtt_us: int | None
    min_rtt_us: int | None
    mss: int | None
    bytes_acked: int | None
    bytes_received: int | None
    idle_ms: int | None  # since anything was sent or received, acks included
    last_send_ms: int | None  # since data was last sent
    last_recv_ms: int | None  # since data was last received


class Listener(NamedTuple):
    family: int
    addr: str
    port: int
    raw_addr: bytes
    accept_queue: int  # connections established and not yet accepted
    backlog: int  # the queue's limit (listen()'s backlog, capped by net.core.somaxconn)
    inode: int


def _parse_live(data: bytes, offset: int, mlen: int) -> LiveSocket | None:
    family, state, timer, retrans = data[offset + D.FAMILY:offset + D.FAMILY + 4]
    n = D.ADDR_LEN.get(family)
    if n is None:
        return None
    sport, dport = _PORTS.unpack_from(data, offset + D.SPORT)
    raw_s = bytes(data[offset + D.SRC:offset + D.SRC + 16])
    raw_d = bytes(data[offset + D.DST:offset + D.DST + 16])
    expires, rqueue, wqueue, _uid, inode = _TAIL.unpack_from(data, offset + D.EXPIRES)
    info = D.attribute(data, offset, mlen, D.INET_DIAG_INFO)
    if info is not None and info[1] >= _INFO.size:
        mss, _unacked, sent, recv, ack, rtt, acked, received, min_rtt = _INFO.unpack_from(data, info[0])
        idle = min(sent, recv, ack)
    else:
        mss = sent = recv = rtt = acked = received = min_rtt = idle = None
    return LiveSocket(
        family, STATES.get(state) or str(state), _ntop(family, raw_s[:n]), sport, _ntop(family, raw_d[:n]), dport,
        raw_s, raw_d, rqueue, wqueue, _KEEPALIVE.get(timer), expires if timer == TIMER_KEEPALIVE else None,
        retrans, inode, rtt, min_rtt, mss, acked, received, idle, sent, recv)


def _parse_listener(data: bytes, offset: int, _mlen: int) -> Listener | None:
    family = data[offset + D.FAMILY]
    n = D.ADDR_LEN.get(family)
    if n is None or data[offset + D.STATE] != TCP_LISTEN:
        return None
    raw = bytes(data[offset + D.SRC:offset + D.SRC + 16])
    _expires, rqueue, wqueue, _uid, inode = _TAIL.unpack_from(data, offset + D.EXPIRES)
    return Listener(family=family, addr=_ntop(family, raw[:n]), port=_PORTS.unpack_from(data, offset + D.SPORT)[0],
                    raw_addr=raw, accept_queue=rqueue, backlog=wqueue, inode=inode)


def live_sockets(netns: str | None = None) -> list[LiveSocket]:
    """The namespace's TCP connections (IPv4 and IPv6) but TIME_WAIT ones,
    with tcp_info; raises PortReadError naming the namespace."""
    return D.dump(netns, CONNECTED, _parse_live, ext=1 << (D.INET_DIAG_INFO - 1), what="TCP connections")


def listeners(netns: str | None = None) -> list[Listener]:
    """The namespace's listening TCP sockets with their accept queues."""
    return D.dump(netns, 1 << TCP_LISTEN, _parse_listener, what="listening sockets")


def _listen_counters() -> tuple[int, int]:
    # /proc/net is the thread group leader's namespace: thread-self is ours
    with open("/proc/thread-self/net/netstat") as f:
        lines = f.read().splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            row = dict(zip(head.split()[1:], vals.split()[1:]))
            return int(row.get("ListenOverflows", 0)), int(row.get("ListenDrops", 0))
    return 0, 0


def listen_counters(netns: str | None = None) -> tuple[int, int]:
    """The namespace's (TcpExtListenOverflows, TcpExtListenDrops): SYNs or
    handshakes dropped because an accept queue was full, and all drops at
    listeners (overflows included)."""
    return in_netns(netns, _listen_counters)
