"""Decoding kernel records into typed events.

The struct.Struct format is derived from the ctypes mirror (layout.py), so
the layout is written down once on this side too. Decoding a record is one
unpack_from: this runs once per record in the hot path.
"""

from __future__ import annotations

import ctypes
import struct
from typing import NamedTuple

from . import layout

_CODES = {
    ctypes.c_uint64: "Q", ctypes.c_uint32: "I", ctypes.c_int32: "i",
    ctypes.c_uint16: "H", ctypes.c_uint8: "B",
}


def struct_format(cls: type[ctypes.Structure]) -> tuple[str, list[str]]:
    """A little-endian struct format and field names equal to a ctypes layout.

    Byte arrays and char arrays become ``Ns`` (one bytes field); names
    starting with ``_pad`` become pad bytes and are not returned.
    """
    fmt, names, pos = "<", [], 0
    for name, ctype in cls._fields_:
        offset = getattr(cls, name).offset
        if offset > pos:
            fmt += f"{offset - pos}x"
        size = ctypes.sizeof(ctype)
        if name.startswith("_pad"):
            fmt += f"{size}x"
        elif ctype in _CODES:
            fmt += _CODES[ctype]
            names.append(name)
        else:  # arrays of bytes or chars
            fmt += f"{size}s"
            names.append(name)
        pos = offset + size
    if ctypes.sizeof(cls) > pos:
        fmt += f"{ctypes.sizeof(cls) - pos}x"
    return fmt, names


_FMT, _NAMES = struct_format(layout.ConnRecord)
_STRUCT = struct.Struct(_FMT)
assert _STRUCT.size == layout.RECORD_SIZE
RECORD = _STRUCT  # one struct conn_record, for readers that unpack batches themselves
_TYPES = frozenset((layout.EV_CONNECT, layout.EV_ACCEPT, layout.EV_CLOSE))
_TYPE_AT = _NAMES.index("type")


class ConnEvent(NamedTuple):
    """One record from the kernel, fields as in struct conn_record.

    A tuple: the batch reader's unpacked fields become one without a copy
    per field, and the encoder unpacks it in one step."""

    ts_ns: int
    start_ns: int
    established_ns: int
    end_ns: int
    skaddr: int
    cgroup_id: int
    bytes_sent: int
    bytes_received: int
    pid: int
    tid: int
    saddr: bytes
    daddr: bytes
    syn_retransmits: int
    synack_retransmits: int
    retransmits: int
    err: int
    resets_sent: int
    resets_received: int
    srtt_us: int
    min_rtt_us: int
    keepalive_idle: int
    sport: int
    dport: int
    family: int
    mss: int
    type: int
    pid_source: int
    direction: int
    closed_by: int
    flags: int
    health: int
    comm: bytes


assert list(ConnEvent._fields) == _NAMES, "ConnEvent fields drifted from layout.ConnRecord"


_new = tuple.__new__  # ConnEvent from a tuple of its fields, without NamedTuple's argument parsing


class MalformedRecord(ValueError):
    pass


def decode(raw: bytes | memoryview) -> ConnEvent:
    """Decodes one record; raises MalformedRecord on a size or type mismatch."""
    if len(raw) != _STRUCT.size:
        raise MalformedRecord(f"record of {len(raw)} bytes, expected {_STRUCT.size}")
    ev = _new(ConnEvent, _STRUCT.unpack_from(raw))
    if ev.type not in _TYPES:
        raise MalformedRecord(f"unknown record type {ev.type}")
    return ev


def from_fields(batch: list[tuple]) -> tuple[list[ConnEvent], int]:
    """Events from records already unpacked with RECORD (the batch reader);
    and how many were malformed (an unknown record type), left out."""
    at = _TYPE_AT
    events = [_new(ConnEvent, fields) for fields in batch if fields[at] in _TYPES]
    return events, len(batch) - len(events)


def decode_state(raw: bytes | memoryview) -> ConnEvent:
    """Decodes a per-socket state (a map value: its type is not set)."""
    if len(raw) != _STRUCT.size:
        raise MalformedRecord(f"state of {len(raw)} bytes, expected {_STRUCT.size}")
    return _new(ConnEvent, _STRUCT.unpack_from(raw))


def encode(ev: ConnEvent) -> bytes:
    """The inverse of decode, for tests and replay tools."""
    return _STRUCT.pack(*(getattr(ev, n) for n in _NAMES))


def connect_failed(ev: "ConnEvent") -> bool:
    """The one definition of a failed connect attempt on the Python side: an
    errno, or abandoned by the application during the handshake (F_ABORTED,
    no errno). Its C twin is connect_failed() in bpf/aggregate.c."""
    return bool(ev.err) or bool(ev.flags & layout.F_ABORTED)

