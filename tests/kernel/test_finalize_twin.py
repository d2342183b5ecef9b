"""finalize() (agent/decode/finalize.py) is the user-space twin of resolve() in bpf/emit.c.

The reaper turns a state the kernel never resolved into the record resolve()
would have emitted. Here the real destroy program resolves states the test
writes into the kernel's socks map (through BPF_PROG_TEST_RUN, with the state's
key as its socket: a closing state is resolved without reading the socket),
and each record the kernel emits must equal finalize() of the same state,
field for field (but the emit time).
"""

from __future__ import annotations

import os
import time

import pytest

from ..agentrun import own_tracer
from .test_unseen_close import _test_run_raw_tp

FAKE_SK = 0xFFFF_F00D_0000_0000  # only a map key: a closing state's socket is never read


def _L():
    from agent.decode import layout

    return layout


# name -> the state's fields besides the common ones; every state reached CLOSE
CASES = {
    "connect abandoned": dict(direction="OUT", flags=0),
    "connect refused": dict(direction="OUT", flags=0, err=111, resets_received=1),
    "reset after establishing": dict(direction="OUT", flags="EST", resets_received=1),
    "closed first here": dict(direction="OUT", flags="EST|TW", closed_by="LOCAL"),
    "closed with an errno": dict(direction="OUT", flags="EST|TW", err=104, closed_by="LOCAL"),
    "closed by no one seen": dict(direction="IN", flags="EST"),
    "closed by the peer": dict(direction="IN", flags="EST", closed_by="PEER"),
    "inbound handshake never finished": dict(direction="IN", flags=0),
}


def _state(i: int, fields: dict):
    L = _L()
    flags = L.F_CLOSING
    if fields.get("flags"):
        for f in fields["flags"].split("|"):
            flags |= {"EST": L.F_ESTABLISHED, "TW": L.F_TIME_WAIT}[f]
    st = L.ConnRecord(start_ns=1_000_000, end_ns=2_000_000 + i, skaddr=FAKE_SK + i, cgroup_id=1, pid=os.getpid(),
                      tid=os.getpid(), err=fields.get("err", 0), resets_received=fields.get("resets_received", 0),
                      sport=40000 + i, dport=5432, family=2, flags=flags,
                      direction=L.DIR_OUTBOUND if fields["direction"] == "OUT" else L.DIR_INBOUND,
                      closed_by=getattr(L, f"CLOSED_BY_{fields.get('closed_by', 'NONE')}"))
    if flags & L.F_ESTABLISHED:
        st.established_ns = 1_500_000
    st.saddr[:4] = [127, 0, 0, 1]
    st.daddr[:4] = [127, 0, 0, 2]
    return st


@pytest.fixture
def tracer():
    with own_tracer(("destroy", "raw_tracepoint"),
                    "the destroy hook is not a raw tracepoint on this kernel: only raw programs can be test-run") as t:
        yield t


def test_finalize_gives_the_record_resolve_emits(tracer):
    from agent.decode.events import decode_state
    from agent.decode.finalize import finalize

    socks, destroy = tracer.bpf["socks"], tracer.bpf.funcs[b"raw_tracepoint__tcp_destroy_sock"]
    states = {}
    for i, (name, fields) in enumerate(CASES.items()):
        st = _state(i, fields)
        socks[socks.Key(st.skaddr)] = socks.Leaf.from_buffer_copy(bytes(st))
        assert _test_run_raw_tp(destroy.fd, st.skaddr) == 0
        states[st.skaddr] = (name, bytes(st))
    emitted, deadline = {}, time.monotonic() + 5
    while len(emitted) < len(states) and time.monotonic() < deadline:
        for ev in tracer.poll(100):
            if ev.skaddr in states:
                emitted[ev.skaddr] = ev
    assert set(emitted) == set(states), sorted(states[k][0] for k in set(states) - set(emitted))
    for sk, (name, raw) in states.items():
        kernel = emitted[sk]
        twin = finalize(decode_state(raw), kernel.ts_ns)
        assert twin._asdict() == kernel._asdict(), name
        assert sk not in {k.value for k in socks.keys()}, f"{name}: the state stayed behind"
