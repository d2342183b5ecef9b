"""The template encoder against the dict builder: the same bytes, every variant."""

import itertools
import socket

import orjson
import pytest

from agent.decode import layout as L
from agent.records.build import RecordBuilder
from agent.records.encode import RecordEncoder

from ..schema import assert_valid
from .factories import event

V6 = socket.inet_pton(socket.AF_INET6, "fd00::7:2")
MAPPED = socket.inet_pton(socket.AF_INET6, "::ffff:169.254.7.2")
COMMS = [b"curl".ljust(16, b"\0"), b'a"b\\c\n\x01%s%d', b"\xff\xfe bad utf8\0\0", b"\xc3\xa9t\xc3\xa9", bytes(16)]
FLAGS = [0, L.F_ESTABLISHED, L.F_ABORTED, L.F_SYSCALL_ONLY | L.F_INCOMPLETE, L.F_TIME_WAIT | L.F_PREEXISTING,
         L.F_INCOMPLETE | L.F_CLOSING | L.F_TIME_WAIT]
TIMES = [  # (start, established, end): ordinary, unset, and out of order
    (1_000_000_000, 1_000_250_000, 3_500_000_000), (0, 0, 0), (1_000_000_000, 0, 900_000_000),
    (5_000_000_000, 4_000_000_000, 4_500_000_000)]


HEALTH = [  # (health, keepalive idle in jiffies): not read, read, every option on with TCP_KEEPIDLE 75 s at HZ 250
    (0, 0), (L.H_READ, 0), (L.H_READ | L.H_KEEPALIVE | L.H_NODELAY, 75 * 250)]


def variants():
    for rtype, flags, err, times, comm, fam, (health, idle) in itertools.product(
            (L.EV_CONNECT, L.EV_ACCEPT, L.EV_CLOSE), FLAGS, (0, 111, 110, 4095), TIMES, COMMS,
            ("v4", "v6", "mapped"), HEALTH):
        start, est, end = times
        kw = dict(type=rtype, flags=flags, err=err, start_ns=start, established_ns=est, end_ns=end, comm=comm,
                  health=health, keepalive_idle=idle, bytes_sent=err * 1000 + 1, bytes_received=2**40 + err,
                  srtt_us=err + 31, min_rtt_us=err + 17, mss=65483 - err,
                  ts_ns=7_123_456_789 + err, syn_retransmits=err % 3, retransmits=err % 7, resets_sent=1,
                  pid_source=err % 7, direction=1 + err % 3, closed_by=err % 5, cgroup_id=2**63 + err)
        if fam != "v4":
            kw.update(family=socket.AF_INET6, daddr=V6 if fam == "v6" else MAPPED, saddr=V6)
        yield event(**kw)


@pytest.mark.parametrize("unread, hz", [(frozenset(), 250), (frozenset({"min_rtt_us", "nodelay"}), 250),
                                       (frozenset(), 0)])
@pytest.mark.parametrize("connect_on_close", [False, True])
@pytest.mark.parametrize("host", ["h1", 'we%ird "host"\\é'])
def test_templates_write_what_the_builder_and_orjson_write(host, connect_on_close, unread, hz):
    builder = RecordBuilder(host=host, connect_on_close=connect_on_close, health_unread=unread, hz=hz)
    encoder = RecordEncoder(builder)
    events = list(variants())
    assert len(events) > 12000
    for first in (1, 10**12):
        encoded = encoder.encode(events, first)
        assert len(encoded) == len(events)
        for i, (ev, data) in enumerate(zip(events, encoded)):
            rec = builder.from_event(ev)
            rec["seq"] = first + i
            assert data.encode() == orjson.dumps(rec), rec


def test_every_encoded_variant_validates_against_the_schema():
    builder = RecordBuilder(host="h1", hz=250)
    seen = set()
    for ev, data in zip(list(variants()), RecordEncoder(builder).encode(list(variants()), 1)):
        rec = orjson.loads(data)
        key = (rec["type"], rec.get("result"), rec.get("error") is None, rec.get("latency_us") is None,
               rec.get("duration_us") is None, rec["family"], rec.get("bytes_sent") is None,
               rec.get("keepalive_idle_s") is None)
        if key in seen:
            continue
        seen.add(key)
        assert_valid(rec)
    assert len(seen) == 34  # every combination of the nullable fields the variants reach


def test_an_empty_batch_is_empty():
    assert RecordEncoder(RecordBuilder(host="h1")).encode([], 5) == []
