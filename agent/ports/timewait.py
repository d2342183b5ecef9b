"""TIME_WAIT sockets of a network namespace, counted per destination.

One sock_diag dump per family asks the kernel for TCP sockets in TIME_WAIT
only (states = 1 << 6), so the kernel does the filtering and only those cross
into user space; only three fields of each are read.

A TIME_WAIT socket holds its local port for that (local address, remote
address, remote port) until it expires (60 s on Linux), which is what runs a
client out of ephemeral ports when it opens a new connection per request.

Addresses are text as in the records: "169.254.3.1", "fd00:3::2". A TIME_WAIT
socket left by an AF_INET6 socket connected to an IPv4 address (v4-mapped)
keeps its family and reads "::ffff:169.254.3.1", as its connect/close records
do; it is dumped once, with the IPv6 sockets.

The dump itself is sockdiag.py's.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter

from . import sockdiag as D

TCP_TIME_WAIT = 6  # enum tcp_state; sock_diag's states bitmask is 1 << state

Key = tuple[str, str, int]  # (local address, remote address, remote port)

_DPORT_FMT = struct.Struct(">H")
_ntop = socket.inet_ntop


def _key(data: bytes, offset: int, _mlen: int) -> Key | None:
    if data[offset + D.STATE] != TCP_TIME_WAIT:
        return None
    family = data[offset + D.FAMILY]
    n = D.ADDR_LEN.get(family)
    if n is None:
        return None
    return (_ntop(family, data[offset + D.SRC:offset + D.SRC + n]),
            _ntop(family, data[offset + D.DST:offset + D.DST + n]),
            _DPORT_FMT.unpack_from(data, offset + D.DPORT)[0])


def timewait_counts(netns: str | None = None, *, protocol: int = socket.IPPROTO_TCP) -> dict[Key, int]:
    """{(local address, remote address, remote port): TIME_WAIT sockets} in netns.

    netns is a namespace path (/proc/<pid>/ns/net, /run/netns/<name>); None
    reads the agent's own. IPv4 and IPv6. `protocol` is there for tests (one
    without a sock_diag handler makes the kernel fail the dump). Raises
    PortReadError naming the namespace when it cannot be read.
    """
    keys = D.dump(netns, 1 << TCP_TIME_WAIT, _key, what="TIME_WAIT sockets", protocol=protocol)
    return dict(Counter(keys))


def timewait_total(netns: str | None = None) -> int:
    """All TIME_WAIT TCP sockets (IPv4 and IPv6) in netns (None: our own)."""
    return sum(timewait_counts(netns).values())
