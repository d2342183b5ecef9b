"""The batch reader (agent/kernel/ringbuf.py) against a real ring buffer.

A small program on this test's own getppid() calls writes into a one-page
ring what the test asks for: numbered records of connscope's layout, a
reserved-then-discarded one, or one of another size. The reader must return
exactly the numbered records, in order, across wrap-around and a full ring.
"""

import os

import pytest

from agent.decode import layout as L
from agent.decode.events import RECORD, ConnEvent
from agent.kernel import ringbuf
from agent.kernel.loader import bpf_dir

from ..agentrun import is_root

_PID_AT = ConnEvent._fields.index("pid")

pytestmark = [
    pytest.mark.skipif(not is_root(), reason="needs root (loads a BPF program)"),
    pytest.mark.skipif(not ringbuf.supported()[0], reason=ringbuf.supported()[1] or "supported"),
]

GOOD, DISCARD, SHORT = 0, 1, 2

PROGRAM = r"""
#include "connscope.h"
BPF_RINGBUF_OUTPUT(ring, 1);
BPF_ARRAY(ctl, u64, 4);  /* 0: pid, 1: what to write, 2: next number, 3: failed writes */
struct short_rec { u64 a[8]; };

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
	int k0 = 0, k1 = 1, k2 = 2, k3 = 3;
	u64 *pid = ctl.lookup(&k0), *what = ctl.lookup(&k1), *next = ctl.lookup(&k2), *failed = ctl.lookup(&k3);
	if (!pid || !what || !next || !failed || *pid != (bpf_get_current_pid_tgid() >> 32))
		return 0;
	if (*what == 1) {
		struct conn_record *r = ring.ringbuf_reserve(sizeof(*r));
		if (r)
			ring.ringbuf_discard(r, 0);
		else
			__sync_fetch_and_add(failed, 1);
		return 0;
	}
	if (*what == 2) {
		struct short_rec s = {};
		if (ring.ringbuf_output(&s, sizeof(s), 0))
			__sync_fetch_and_add(failed, 1);
		return 0;
	}
	struct conn_record rec = {};
	rec.ts_ns = *next;
	rec.type = EV_CLOSE;
	rec.pid = 4242;
	if (ring.ringbuf_output(&rec, sizeof(rec), 0))
		__sync_fetch_and_add(failed, 1);
	else
		*next += 1;
	return 0;
}
"""


class Ring:
    def __init__(self):
        from bcc import BPF

        self.bpf = BPF(text=PROGRAM.encode(), cflags=[f"-I{bpf_dir()}"])
        self.ctl = self.bpf["ctl"]
        self.ctl[self.ctl.Key(0)] = self.ctl.Leaf(os.getpid())
        self.ctl[self.ctl.Key(2)] = self.ctl.Leaf(1)
        table = self.bpf["ring"]
        self.reader = ringbuf.RingReader(table.map_fd, table.max_entries, RECORD)

    def write(self, what: int, times: int = 1) -> None:
        self.ctl[self.ctl.Key(1)] = self.ctl.Leaf(what)
        for _ in range(times):
            os.getppid()

    @property
    def failed(self) -> int:
        return self.ctl[self.ctl.Key(3)].value

    def numbers(self, limit: int = 100_000) -> list[int]:
        out = []
        for rec in self.reader.read(limit):
            assert len(rec) == len(RECORD.unpack(bytes(RECORD.size)))
            assert rec[_PID_AT] == 4242  # pid: the fields sit where the layout says
            out.append(rec[0])
        return out

    def close(self):
        self.reader.close()
        self.bpf.cleanup()


@pytest.fixture
def ring():
    r = Ring()
    try:
        yield r
    finally:
        r.close()


STRIDE = 8 + L.RECORD_SIZE  # header + record, already a multiple of 8
FITS = 4096 // STRIDE  # records in a one-page ring (22 of 184 bytes)


def test_records_come_back_in_order_across_wrap_around(ring):
    assert ring.reader.size == 4096
    seen = []
    # 20 at a time (3680 bytes): the second batch (3680..7360) straddles the
    # end of the data pages
    for _ in range(10):
        ring.write(GOOD, 20)
        seen += ring.numbers()
    assert seen == list(range(1, 201))
    assert ring.failed == 0
    assert ring.reader.available() == 0


def test_a_limit_leaves_the_rest_for_the_next_read(ring):
    ring.write(GOOD, 20)
    assert ring.numbers(limit=10) == list(range(1, 11))
    assert ring.reader.available() == 10 * STRIDE
    assert ring.numbers() == list(range(11, 21))


def test_discarded_records_are_skipped_and_counted(ring):
    ring.write(GOOD, 3)
    ring.write(DISCARD, 2)
    ring.write(GOOD, 3)
    assert ring.numbers() == [1, 2, 3, 4, 5, 6]
    assert ring.reader.discarded == 2
    assert ring.reader.malformed == 0


def test_a_record_of_another_size_is_counted_not_decoded(ring):
    ring.write(GOOD, 2)
    ring.write(SHORT, 1)
    ring.write(GOOD, 2)
    assert ring.numbers() == [1, 2, 3, 4]
    assert ring.reader.malformed == 1
    # odd records between runs, across wrap-around: strides resume after each
    seen = []
    for _ in range(5):
        ring.write(GOOD, 20)
        ring.write(SHORT, 1)
        seen += ring.numbers()
    assert seen == list(range(5, 105))
    assert ring.reader.malformed == 6


def test_a_full_ring_loses_what_did_not_fit_and_counts_it(ring):
    ring.write(GOOD, FITS + 10)
    assert ring.failed == 10  # the kernel refused them: the agent counts such refusals (lost_buffer_full)
    assert ring.numbers() == list(range(1, FITS + 1))
    ring.write(GOOD, 5)  # room again once consumed
    assert ring.numbers() == list(range(FITS + 1, FITS + 6))


def test_the_agent_reads_its_ring_in_batches_and_says_so(agent):
    # x86-64 here (the module skips elsewhere): the batch reader, named in the
    # start record so a host that fell back to libbpf's callbacks shows it
    assert agent.start["event_reader"]["method"] == "mmap"
