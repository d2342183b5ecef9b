"""A socket destroyed without its CLOSE transition seen: the record recovers what is knowable.

The kernel can skip one run of our lifecycle program (its recursion guard,
reported as lost/recursion_miss). When the skipped run is a connect's
SYN_SENT -> CLOSE, tcp_destroy_sock is the next event the state sees, so the
destroy program must report the attempt with its addresses (a connect's state
has no source port before its next transition) and with the errno that the
error report kept by tuple, flagged incomplete.

The skip itself cannot be caused on demand, so it is the one thing simulated:
a real socket is held in SYN_SENT (its SYN dropped by a full accept queue on
loopback), and the real destroy program runs on it through BPF_PROG_TEST_RUN
before its CLOSE. Everything else is the product's own code on the real kernel.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import time

import pytest

from ..agentrun import own_tracer

_SYS_bpf, _BPF_PROG_TEST_RUN = 321, 10  # x86_64
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _test_run_raw_tp(prog_fd: int, *args: int) -> int:
    """Runs a raw tracepoint program once with these arguments (its ctx)."""
    ctx = (ctypes.c_uint64 * len(args))(*args)
    attr = bytearray(80)
    attr[0:4] = prog_fd.to_bytes(4, "little")
    attr[40:44] = ctypes.sizeof(ctx).to_bytes(4, "little")  # ctx_size_in
    attr[48:56] = ctypes.addressof(ctx).to_bytes(8, "little")  # ctx_in
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    if _libc.syscall(_SYS_bpf, _BPF_PROG_TEST_RUN, buf, len(attr)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"BPF_PROG_TEST_RUN: {os.strerror(e)}")
    return int.from_bytes(attr[4:8], "little")  # retval


@pytest.fixture
def tracer():
    with own_tracer(("destroy", "raw_tracepoint"),
                    "the destroy hook is not a raw tracepoint on this kernel: only raw programs can be test-run") as t:
        yield t


@pytest.fixture
def syn_sent():
    """A loopback socket held in SYN_SENT: the listener's accept queue
    (backlog 0) is full with one connection, so the kernel drops its SYNs."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    held = socket.socket()
    held.setblocking(False)
    try:
        assert held.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
        time.sleep(0.2)
        assert held.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # still connecting
        yield held, port
    finally:
        for s in (held, first, lst):
            s.close()


def _state_of(tracer, port: int):
    """(sk, state) of our SYN_SENT socket in the kernel's socks map."""
    from agent.decode import layout as L

    for key, val in tracer.bpf["socks"].items():  # ports are kept in host order
        if val.pid == os.getpid() and val.dport == port and not val.flags & L.F_ESTABLISHED:
            return key.value, val
    raise AssertionError(f"no SYN_SENT state for port {port}")


def _destroy_now(tracer, sk: int) -> None:
    fn = tracer.bpf.funcs[b"raw_tracepoint__tcp_destroy_sock"]
    assert _test_run_raw_tp(fn.fd, sk) == 0


def _wait_connect(tracer, port: int):
    from agent.decode import layout as L

    deadline, seen = time.monotonic() + 5, []
    while time.monotonic() < deadline:
        seen += tracer.poll(100)
        mine = [e for e in seen if e.type == L.EV_CONNECT and e.dport == port and e.pid == os.getpid()]
        if mine:
            return mine
    raise AssertionError(f"no connect record for port {port}: {seen}")


@pytest.mark.parametrize("reported_errno", [errno.ETIMEDOUT, 0], ids=["error-reported", "no-error"])
def test_destroy_without_close_recovers_addresses_and_errno(tracer, syn_sent, reported_errno):
    from agent.decode import layout as L

    held, port = syn_sent
    sport = held.getsockname()[1]
    tracer.poll(100)
    sk, st = _state_of(tracer, port)
    # The tracepoint method stores the state at SYN_SENT, before the port is
    # chosen; fentry and kprobe run in tcp_connect(), after it is bound, and
    # read it at this kernel's BTF offset.
    at_connect = 0 if tracer.statuses["tcp_connect"].method.name == "tracepoint" else sport
    assert (st.family, st.sport) == (socket.AF_INET, at_connect)
    assert not st.flags & L.F_CLOSING
    if reported_errno:
        # what error_report leaves when no closing socket matches its tuple
        table = tracer.bpf["early_err"]
        k = table.Key()
        ctypes.memmove(k.daddr, socket.inet_aton("127.0.0.1"), 4)
        k.sport, k.dport, k.family = sport, port, socket.AF_INET
        table[k] = ctypes.c_int32(reported_errno)

    _destroy_now(tracer, sk)

    [ev] = _wait_connect(tracer, port)
    assert (ev.family, ev.sport, ev.dport) == (socket.AF_INET, sport, port)
    assert ev.saddr[:4] == ev.daddr[:4] == socket.inet_aton("127.0.0.1")
    assert ev.flags & L.F_INCOMPLETE
    assert ev.err == reported_errno
    assert bool(ev.flags & L.F_ABORTED) == (reported_errno == 0)
    assert sk not in {k.value for k in tracer.bpf["socks"].keys()}
    if reported_errno:
        with pytest.raises(KeyError):  # the errno was taken, not left behind
            tracer.bpf["early_err"][k]


def _notes(tracer):
    """The destroy hook's per-CPU notes (bpf/maps.c backup_notes), and its index."""
    from agent.kernel.loader import bpf_dir

    idx = int(re.search(r"#define BUSY_tcp_destroy_sock (\d+)", (bpf_dir() / "maps.c").read_text())[1])
    notes = tracer.bpf["backup_notes"]
    return notes, notes.Key(idx)


def test_destroy_backup_handles_only_runs_the_kernel_skipped(tracer, syn_sent):
    """The backup program on tcp_destroy_sock handles a destroy unless the
    main program noted that it handled it (a run the kernel skips writes no
    note), and takes the note: an event is never handled twice."""
    from agent.decode import layout as L

    if "backup__tcp_destroy_sock" not in (tracer.statuses["destroy"].method.programs or ()):
        pytest.fail("the destroy hook's raw method has no backup program")
    held, port = syn_sent
    sport = held.getsockname()[1]
    tracer.poll(100)
    sk, _ = _state_of(tracer, port)
    backup = tracer.bpf.funcs[b"backup__tcp_destroy_sock"]
    notes, key = _notes(tracer)
    cpu = sorted(os.sched_getaffinity(0))[0]
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # BPF_PROG_TEST_RUN runs on the caller's CPU: this one's note
    try:
        per_cpu = notes[key]
        per_cpu[cpu].sk[0], per_cpu[cpu].what[0], per_cpu[cpu].next = sk, 0, 1
        notes[key] = per_cpu
        assert _test_run_raw_tp(backup.fd, sk) == 0  # noted: the main one's run, left alone
        assert _state_of(tracer, port)[0] == sk
        assert sk not in list(notes[key][cpu].sk)  # the note was taken

        assert _test_run_raw_tp(backup.fd, sk) == 0  # no note: a run the kernel skipped
    finally:
        os.sched_setaffinity(0, affinity)
    [ev] = _wait_connect(tracer, port)
    assert (ev.family, ev.sport, ev.dport) == (socket.AF_INET, sport, port)
    assert ev.flags & L.F_INCOMPLETE
    assert sk not in {k.value for k in tracer.bpf["socks"].keys()}
