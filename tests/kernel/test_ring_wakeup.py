"""The reader is woken for a window row's first record, and not for every record.

Records are written without a wake-up and read on a tick (bpf/emit.c, emit),
which halves the agent's CPU under churn. The first record of a (process,
destination) row in a window is the exception: a summarising agent must read
the process's command line and unit while it exists, and a short-lived
process is gone within one tick. The test sets the tick to 5 s, so only the
wake-up can bring the record within a second.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from ..agentrun import own_tracer

TICK_MS = 5000


@pytest.fixture
def slow_tick_tracer():
    with own_tracer(("event_buffer", "ringbuf"),
                    "no BPF ring buffer on this kernel: the perf buffer wakes per its own watermark",
                    ring_tick_ms=TICK_MS, aggregate=True) as t:
        yield t


def test_a_new_process_first_record_wakes_the_reader_at_once(slow_tick_tracer):
    from agent.decode import layout as L

    tracer = slow_tick_tracer
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    port = lst.getsockname()[1]
    child = None
    try:
        # this process's own first record (its accepts will be its) is out of the way
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        lst.accept()[0].close()
        deadline = time.monotonic() + 2 * TICK_MS / 1000 + 2
        while time.monotonic() < deadline and not any(
                e.type == L.EV_CONNECT and e.dport == port for e in tracer.poll(TICK_MS)):
            pass
        tracer.poll(0)

        child = subprocess.Popen(
            [sys.executable, "-c",
             "import socket,sys,time\n"
             "print('ready', flush=True)\n"
             "sys.stdin.readline()\n"
             f"s = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
             "print(s.getsockname()[1], flush=True)\n"
             "time.sleep(30)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n"

        # The reader waits in the ring buffer's epoll before the child connects.
        arrived: list[tuple[float, object]] = []

        def read() -> None:
            end = time.monotonic() + TICK_MS / 1000 + 3
            while time.monotonic() < end:
                for e in tracer.poll(TICK_MS):
                    if e.type == L.EV_CONNECT and e.pid == child.pid:
                        arrived.append((time.monotonic(), e))
                        return

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.5)
        child.stdin.write("go\n")
        child.stdin.flush()
        sport = int(child.stdout.readline())
        connected = time.monotonic()
        reader.join()
        assert arrived, f"no connect record from pid {child.pid} port {sport}"
        [(at, ev)] = arrived
        assert ev.sport == sport and ev.dport == port
        waited = at - connected
        assert waited < 1.0, f"the child's first record took {waited:.2f} s: it waited for the {TICK_MS} ms tick"
    finally:
        if child is not None:
            child.kill()
            child.wait()
        lst.close()
