"""Connection records straight to JSON text, a batch at a time.

RecordBuilder.from_event builds a dict per record and orjson serializes it;
at tens of thousands of records a second that dict is most of the agent's
cost. This encoder writes the JSON text itself: one f-string per record
type over the event's fields unpacked at once, with the host and run id
made JSON once, and the fragments a process's or an endpoint's records
share, a close record's counts and outcome, errno names and timestamps'
seconds cached as JSON text. The text,
UTF-8 encoded, is the same byte for byte as
orjson.dumps(builder.from_event(ev)) with `seq` set: schema v1 is a public
contract, and tests/pure/test_encode.py compares both over every variant.
"""

from __future__ import annotations

import time

import orjson

from ..decode import layout as L
from ..decode.events import ConnEvent
from ..decode.text import ABORTED, addr_text, comm_text, error_name
from .build import CLOSED_BY, DIRECTION, FAMILY, HEALTH_FIELDS, PID_SOURCES, RECORD_TYPES, RecordBuilder

_CACHE_MAX = 65536  # entries per cache of JSON fragments


def _json(text: str) -> str:
    return orjson.dumps(text).decode()


_ABORTED = _json(ABORTED)


class RecordEncoder:
    """Encodes connect, accept and close records for one RecordBuilder.

    The fields a process's records share (pid, comm, cgroup, pid source,
    tid) and those an endpoint's share (family and local address; remote
    address and port) are cached as finished JSON fragments: a busy host's
    records come from few processes and destinations."""

    def __init__(self, builder: RecordBuilder):
        self.clock = builder.clock
        self._connect_on_close = builder.connect_on_close
        self._builder = builder
        self._hz = builder.hz
        self._health_all = not builder.health_unread  # every health field readable: the fast path
        self._health_null = "".join(f',"{name}":null' for name in HEALTH_FIELDS)
        self._host_run = f'"host":{_json(builder.host)},"run_id":{_json(builder.run_id)},'
        self._who: dict[tuple, str] = {}  # (pid, comm, cgroup, pid source, tid) -> fragment
        self._src: dict[tuple, str] = {}  # (family, local address) -> fragment
        self._dst: dict[tuple, str] = {}  # (family, remote address, port) -> fragment
        self._tails: dict[tuple, str] = {}  # a close record's counts and outcome -> fragment
        self._secs: dict[int, str] = {}
        self._errors: dict[int, str] = {0: "null"}
        self.by_type = [0] * 8  # records encoded, by EV_* type

    def _who_of(self, key: tuple) -> str:
        pid, comm, cgroup, pid_source, tid = key
        text = (f'"pid":{pid},"comm":{_json(comm_text(comm))},"cgroup_id":{cgroup},'
                f'"pid_source":"{PID_SOURCES.get(pid_source, "unknown")}","tid":{tid},')
        return _remember(self._who, key, text)

    def _src_of(self, key: tuple) -> str:
        family, raw = key
        # inet_ntop text: nothing in it needs JSON escaping
        return _remember(self._src, key, f'"family":"{FAMILY.get(family) or family}","saddr":"{addr_text(family, raw)}",')

    def _dst_of(self, key: tuple) -> str:
        family, raw, port = key
        return _remember(self._dst, key, f'"daddr":"{addr_text(family, raw)}","dport":{port},')

    def _close_tail(self, key: tuple) -> str:
        rtx, syn_rtx, synack_rtx, rst_sent, rst_recv, closed_by, err, flags = key
        return _remember(self._tails, key, (
            f'"retransmits":{rtx},"syn_retransmits":{syn_rtx},"synack_retransmits":{synack_rtx},'
            f'"resets_sent":{rst_sent},"resets_received":{rst_recv},'
            f'"closed_by":"{CLOSED_BY.get(closed_by, "local")}","errno":{err},'
            f'"error":{self._errors.get(err) or self._error(err)},'
            f'"time_wait":{"true" if flags & L.F_TIME_WAIT else "false"},'
            f'"preexisting":{"true" if flags & L.F_PREEXISTING else "false"}'))

    def _second(self, sec: int) -> str:
        return _remember(self._secs, sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))

    def _error(self, err: int) -> str:
        return _remember(self._errors, err, _json(error_name(err)))

    def encode(self, events: list[ConnEvent], first_seq: int) -> list[str]:
        """One JSON document per event (text, no newline), numbered from first_seq."""
        if not events:
            return []
        offset = self.clock.offset_ns(events[0].ts_ns)
        host_run = self._host_run
        whos, srcs, dsts, tails, secs, errors = self._who, self._src, self._dst, self._tails, self._secs, self._errors
        types, directions, by_type = RECORD_TYPES, DIRECTION, self.by_type
        EV_CLOSE, EV_CONNECT = L.EV_CLOSE, L.EV_CONNECT
        F_INCOMPLETE, F_PREEXISTING, F_ABORTED, F_SYSCALL_ONLY = (
            L.F_INCOMPLETE, L.F_PREEXISTING, L.F_ABORTED, L.F_SYSCALL_ONLY)
        F_TW_PRE = L.F_TIME_WAIT | L.F_PREEXISTING
        on_close = self._connect_on_close
        H_READ, H_KEEPALIVE, H_NODELAY = L.H_READ, L.H_KEEPALIVE, L.H_NODELAY
        health_all, health_null, hz = self._health_all, self._health_null, self._hz
        out = []
        append = out.append
        seq = first_seq - 1
        for ev in events:
            (ts, start, est, end, _sk, cgroup, sent, received, pid, tid, saddr, daddr, syn_rtx, synack_rtx, rtx, err,
             rst_sent, rst_recv, srtt, min_rtt, ka_idle, sport, dport, fam, mss, kind, pid_source, direction, closed_by,
             flags, health, comm) = ev
            seq += 1
            by_type[kind] += 1
            sec, ns = divmod(ts + offset, 1_000_000_000)
            key = (pid, comm, cgroup, pid_source, tid)
            who = whos.get(key) or self._who_of(key)
            key = (fam, saddr)
            src = srcs.get(key) or self._src_of(key)
            key = (fam, daddr, dport)
            dst = dsts.get(key) or self._dst_of(key)
            head = (f'{{"type":"{types[kind]}","ts":"{secs.get(sec) or self._second(sec)}.{ns // 1000:06d}Z",'
                    f'{host_run}"seq":{seq},{who}{src}"sport":{sport},{dst}'
                    f'"incomplete":{"true" if flags & F_INCOMPLETE else "false"}')
            if kind == EV_CLOSE:
                duration = "null" if flags & F_PREEXISTING or not end or not est or end < est else (end - est) // 1000
                extra = ""
                if on_close:
                    extra = ',"connect_latency_us":' + (
                        "null" if not est or not start or est < start else str((est - start) // 1000))
                if not health & H_READ:
                    extra += health_null
                elif health_all:
                    extra += (f',"bytes_sent":{sent},"bytes_received":{received},"srtt_us":{srtt},'
                              f'"min_rtt_us":{min_rtt},"mss":{mss},'
                              f'"keepalive":{"true" if health & H_KEEPALIVE else "false"},'
                              f'"keepalive_idle_s":{ka_idle // hz if ka_idle else "null"},'
                              f'"nodelay":{"true" if health & H_NODELAY else "false"}')
                else:  # a kernel whose BTF lacks some: rare, the builder's way
                    extra += orjson.dumps(self._builder.health(ev)).decode().replace("{", ",", 1)[:-1]
                key = (rtx, syn_rtx, synack_rtx, rst_sent, rst_recv, closed_by, err, flags & F_TW_PRE)
                tail = tails.get(key) or self._close_tail(key)
                append(f'{head},"direction":"{directions.get(direction, "outbound")}","duration_us":{duration},'
                       f'{tail}{extra}}}')
            elif kind == EV_CONNECT:
                failed = err or flags & F_ABORTED  # decode.events.connect_failed
                if failed:
                    error = errors.get(err) or self._error(err) if err else _ABORTED
                else:
                    end, error = est, "null"
                latency = "null" if not end or not start or end < start else (end - start) // 1000
                append(f'{head},"result":"{"error" if failed else "ok"}","errno":{err},"error":{error},'
                       f'"latency_us":{latency},"syn_retransmits":{syn_rtx},"resets_received":{rst_recv},'
                       f'"syscall_only":{"true" if flags & F_SYSCALL_ONLY else "false"}}}')
            else:
                append(f'{head},"synack_retransmits":{synack_rtx}}}')
        return out


def _remember(cache: dict, key, text: str) -> str:
    """Keeps text under key in a bounded cache (emptied when full)."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = text
    return text
