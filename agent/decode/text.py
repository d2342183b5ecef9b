"""Kernel bytes as text: comms, addresses, errno names.

Every event is turned into text on the reader (aggregates) or the writer
(records), so the common forms are cached: made once per distinct comm and
address, not once per event. Shared by aggregation and records, which both
sit downstream of decoding.
"""

from __future__ import annotations

import errno as errno_mod
import functools
import socket

# A connect the application abandoned (closed the socket in SYN_SENT) has
# no errno; it is reported with this symbolic error and errno 0.
ABORTED = "ABORTED"


def error_name(err: int) -> str:
    return errno_mod.errorcode.get(err, f"E{err}")


def format_addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


@functools.lru_cache(maxsize=65536)
def comm_text(raw: bytes) -> str:
    """A NUL-padded kernel comm as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@functools.lru_cache(maxsize=65536)
def addr_text(family: int, raw: bytes) -> str:
    """format_addr, remembered."""
    return format_addr(family, raw)


def endpoint_text(addr: str, port: int) -> str:
    """'10.0.1.5:5432', '[fd00::2]:443', '*:8080': an address and port as people write them."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
