import ctypes

import pytest

from agent.decode import layout as L
from agent.decode.events import ConnEvent, MalformedRecord, decode, encode, struct_format

from .factories import event


def test_round_trip_keeps_every_field():
    ev = event(err=111, flags=L.F_ABORTED | L.F_SYSCALL_ONLY, sport=65535, resets_received=3)
    raw = encode(ev)
    assert len(raw) == L.RECORD_SIZE == 176
    assert decode(raw) == ev


def test_fields_land_at_the_mirror_offsets():
    ev = event(pid=0x01020304, dport=0xBEEF, comm=b"abc".ljust(16, b"\0"))
    raw = encode(ev)
    c = L.ConnRecord.from_buffer_copy(raw)
    assert (c.pid, c.dport, c.comm) == (0x01020304, 0xBEEF, b"abc")
    assert raw[L.ConnRecord.pid.offset:L.ConnRecord.pid.offset + 4] == (0x01020304).to_bytes(4, "little")


@pytest.mark.parametrize("size", [0, 175, 177, 352])
def test_wrong_size_is_malformed(size):
    with pytest.raises(MalformedRecord, match="expected 176"):
        decode(bytes(size))


def test_unknown_type_is_malformed():
    with pytest.raises(MalformedRecord, match="unknown record type 9"):
        decode(encode(event(type=9)))


def test_struct_format_pads_like_ctypes():
    class S(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint8), ("b", ctypes.c_uint64), ("_pad0", ctypes.c_uint16), ("c", ctypes.c_uint8 * 3)]

    fmt, names = struct_format(S)
    assert fmt == "<B7xQ2x3s3x"
    assert names == ["a", "b", "c"]


def test_event_fields_follow_the_mirror():
    mirror = [n for n, _ in L.ConnRecord._fields_ if not n.startswith("_pad")]
    assert list(ConnEvent._fields) == mirror
