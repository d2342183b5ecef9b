"""The on-disk spool, on real files (and a real SIGKILL)."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agent.sinks.spool import Spool


def payloads(n, size=100):
    return [f"{i:06d}".encode() + b"x" * (size - 6) for i in range(n)]


def drain(sp, batch=7):
    out = []
    while True:
        items, cur = sp.read(batch)
        if not items:
            sp.commit(cur)
            return out
        out += items
        sp.commit(cur)


def test_in_order_across_segments_and_finished_segments_are_deleted(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=1000)
    data = payloads(50)
    assert all(sp.append(p) for p in data)
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".log")]) > 5
    assert drain(sp) == data
    assert sp.size_bytes == 0
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".log")]) == 1  # only the live one


def test_full_spool_refuses_exactly_what_does_not_fit(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=10 * 112, segment_bytes=1000)  # 112 = 12-byte header + 100
    results = [sp.append(p) for p in payloads(13)]
    assert results == [True] * 10 + [False] * 3
    items, cur = sp.read(4)
    sp.commit(cur)  # room for 4 more
    assert [sp.append(p) for p in payloads(5)] == [True] * 4 + [False]


def test_reading_without_commit_replays_after_a_restart(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=800)
    data = payloads(30)
    for p in data:
        sp.append(p)
    items, cur = sp.read(12)
    sp.commit(cur)
    sp.read(5)  # read, not committed: must come again
    sp.close()
    sp2 = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=800)
    more = payloads(3, 50)
    for p in more:
        sp2.append(p)  # new data goes after the old, in a new segment
    assert drain(sp2) == data[12:] + more


def test_all_consumed_then_restart_keeps_new_data_readable(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=300)
    for p in payloads(9):
        sp.append(p)
    drain(sp)
    sp.close()
    sp2 = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=300)
    assert sp2.append(b"after restart")
    assert drain(sp2) == [b"after restart"]


def test_torn_tail_after_a_crash_is_skipped_not_fatal(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=1 << 20)
    data = payloads(10)
    for p in data:
        sp.append(p)
    sp.close()
    [seg] = [f for f in os.listdir(tmp_path) if f.endswith(".log")]
    with open(tmp_path / seg, "r+b") as f:  # a crash in the middle of the last write
        f.truncate(os.path.getsize(tmp_path / seg) - 30)
    sp2 = Spool(str(tmp_path), max_bytes=1 << 20)
    assert drain(sp2) == data[:9]
    assert sp2.corrupt == 1


def test_corrupt_segment_is_skipped_and_the_next_one_read(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=560)  # 5 frames a segment
    data = payloads(15)
    for p in data:
        sp.append(p)
    sp.close()
    segs = sorted(f for f in os.listdir(tmp_path) if f.endswith(".log"))
    assert len(segs) == 3
    with open(tmp_path / segs[1], "r+b") as f:  # flip a byte in the 2nd frame's payload
        f.seek(112 + 50)
        b = f.read(1)
        f.seek(112 + 50)
        f.write(bytes([b[0] ^ 0xFF]))
    sp2 = Spool(str(tmp_path), max_bytes=1 << 20)
    got = drain(sp2)
    assert got == data[:5] + data[5:6] + data[10:]
    assert sp2.corrupt == 1
    items, cur = sp2.read(10)
    assert items == [] and sp2.corrupt == 1  # counted once


def test_sigkill_loses_nothing_that_was_appended(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from agent.sinks.spool import Spool
        sp = Spool({str(tmp_path)!r}, max_bytes=1 << 24, segment_bytes=4096)
        for i in range(500):
            sp.append(b"%06d" % i)
        print("appended", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert cp.returncode == -signal.SIGKILL and "appended" in cp.stdout
    sp = Spool(str(tmp_path), max_bytes=1 << 24)
    assert drain(sp, batch=64) == [b"%06d" % i for i in range(500)]
    assert sp.corrupt == 0


@pytest.mark.parametrize("max_bytes", [0, 11])
def test_nothing_fits_in_a_tiny_spool(tmp_path, max_bytes):
    assert Spool(str(tmp_path), max_bytes=max_bytes).append(b"x") is False
