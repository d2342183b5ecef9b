"""The user-space twin of resolve() in bpf/emit.c, for reaped states.

A socket that reached CLOSE normally ends in tcp_destroy_sock or an error
report, where the kernel emits its record. When the kernel skipped that
event (recursion guard), or the application holds a dead socket's fd, the
state waits in the map; the reaper (Pipeline._reap, through the loader's
take_stale_closing) takes it out after a
few seconds and this turns it into the record the kernel would have sent.
Keep it in step with resolve(): tests/kernel/test_finalize_twin.py runs the real
resolve() on the same states and compares.
"""

from __future__ import annotations

from . import layout as L
from .events import ConnEvent


def finalize(state: ConnEvent, now_ns: int) -> ConnEvent:
    f = state._asdict()
    f["ts_ns"] = now_ns
    if not f["end_ns"]:
        f["end_ns"] = now_ns
    f["flags"] &= ~L.F_AWAIT_ERR  # resolve() drops its closing-map entry and the flag
    if f["err"]:
        f["flags"] &= ~L.F_TIME_WAIT
    established = bool(f["flags"] & L.F_ESTABLISHED)
    if f["closed_by"] == L.CLOSED_BY_NONE and established:
        f["closed_by"] = L.CLOSED_BY_RESET if (f["resets_received"] or f["resets_sent"]) else L.CLOSED_BY_LOCAL
    if not established and f["direction"] == L.DIR_OUTBOUND:
        if not f["err"]:
            f["flags"] |= L.F_ABORTED
        f["type"] = L.EV_CONNECT
    else:
        f["type"] = L.EV_CLOSE
    return ConnEvent(**f)
