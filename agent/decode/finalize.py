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

import dataclasses

from . import layout as L
from .events import ConnEvent


def finalize(state: ConnEvent, now_ns: int) -> ConnEvent:
    ev = dataclasses.replace(state, ts_ns=now_ns)
    if not ev.end_ns:
        ev.end_ns = now_ns
    ev.flags &= ~L.F_AWAIT_ERR  # resolve() drops its closing-map entry and the flag
    if ev.err:
        ev.flags &= ~L.F_TIME_WAIT
    established = bool(ev.flags & L.F_ESTABLISHED)
    if ev.closed_by == L.CLOSED_BY_NONE and established:
        ev.closed_by = L.CLOSED_BY_RESET if (ev.resets_received or ev.resets_sent) else L.CLOSED_BY_LOCAL
    if not established and ev.direction == L.DIR_OUTBOUND:
        if not ev.err:
            ev.flags |= L.F_ABORTED
        ev.type = L.EV_CONNECT
    else:
        ev.type = L.EV_CLOSE
    return ev
