"""`connscope top`'s screen: every interval is drawn, a process that stops drops to zero, then leaves."""

import io
from datetime import datetime

from agent.sinks.top import LINGER_INTERVALS, TopSink


def _summary(pid, comm, ok, end="2026-11-28T05:42:18.000000Z"):
    return {"type": "summary", "pid": pid, "comm": comm, "connects_ok": ok, "connects_failed": 0, "accepts": 0,
            "window_s": 1.0, "failures": {}, "connect_latency_us": {"p50": 120, "p99": 300},
            "top_destinations": [{"daddr": "10.0.0.1", "dport": 5432}], "retransmits": 0, "syn_retransmits": 0,
            "resets_sent": 0, "resets_received": 0, "active_closes": ok, "window_end": end}


def _screens(out: io.StringIO) -> list[list[str]]:
    return [s.splitlines() for s in out.getvalue().split("\n\n") if s.strip()]


def test_a_process_that_stops_drops_to_zero_then_leaves():
    now = [0.0]
    out = io.StringIO()
    top = TopSink(stream=out, tty=False, interval=1.0, clock=lambda: now[0])
    top.write(_summary(7, "churner", 50))
    top.flush()
    top.flush()  # nothing new, not yet due: no second screen
    assert len(_screens(out)) == 1
    [first] = _screens(out)
    clock = datetime.fromisoformat("2026-11-28T05:42:18+00:00").astimezone().strftime("%H:%M:%S")
    assert first[0].startswith(f"connscope top - {clock} - 1 processes")  # the window's own clock
    assert first[2].split()[:3] == ["7", "churner", "50.0"]
    for i in range(1, LINGER_INTERVALS + 2):
        now[0] = 1.5 * i + 0.01
        top.flush()
    screens = _screens(out)
    assert len(screens) == LINGER_INTERVALS + 2  # every quiet interval was drawn
    for s in screens[1:LINGER_INTERVALS + 1]:
        assert s[2].split()[:5] == ["7", "churner", "0.0", "0.0", "0"], s
    assert len(screens[-1]) == 2  # gone: title and header only
    assert screens[-1][0].endswith("0 processes, sorted by churn")
