"""Connection records straight to JSON bytes, a batch at a time.

RecordBuilder.from_event builds a dict per record and orjson serializes it;
at tens of thousands of records a second that dict is most of the agent's
cost. This encoder writes the JSON text itself: one f-string per record
type, with the host and run id made JSON once, and comms, addresses, errno
names and timestamps' seconds cached as JSON text. The bytes are the same,
byte for byte, as orjson.dumps(builder.from_event(ev)) with `seq` set:
schema v1 is a public contract, and tests/pure/test_encode.py compares both
over every variant.
"""

from __future__ import annotations

import time

import orjson

from ..decode import layout as L
from ..decode.events import ConnEvent
from ..decode.text import ABORTED, addr_text, comm_text, error_name
from .build import CLOSED_BY, DIRECTION, FAMILY, PID_SOURCES, RECORD_TYPES, RecordBuilder

_BOOL = ("false", "true")
_CACHE_MAX = 65536  # distinct comms / addresses / seconds kept as text


def _json(text: str) -> str:
    return orjson.dumps(text).decode()


_ABORTED = _json(ABORTED)


class RecordEncoder:
    """Encodes connect, accept and close records for one RecordBuilder."""

    def __init__(self, builder: RecordBuilder):
        self.clock = builder.clock
        self._host = _json(builder.host)
        self._run_id = _json(builder.run_id)
        self._comms: dict[bytes, str] = {}
        self._addrs: dict[tuple[int, bytes], str] = {}
        self._secs: dict[int, str] = {}
        self._errors: dict[int, str] = {0: "null"}

    def _comm(self, raw: bytes) -> str:
        if len(self._comms) >= _CACHE_MAX:
            self._comms.clear()
        text = self._comms[raw] = _json(comm_text(raw))
        return text

    def _addr(self, family: int, raw: bytes) -> str:
        if len(self._addrs) >= _CACHE_MAX:
            self._addrs.clear()
        # inet_ntop text: nothing in it needs JSON escaping
        text = self._addrs[(family, raw)] = addr_text(family, raw)
        return text

    def _second(self, sec: int) -> str:
        if len(self._secs) >= _CACHE_MAX:
            self._secs.clear()
        text = self._secs[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return text

    def _error(self, err: int) -> str:
        text = self._errors[err] = _json(error_name(err))
        return text

    def encode(self, events: list[ConnEvent], first_seq: int) -> list[bytes]:
        """One JSON document per event (no newline), numbered from first_seq."""
        if not events:
            return []
        offset = self.clock.offset_ns(events[0].ts_ns)
        host, run_id = self._host, self._run_id
        comms, addrs, secs, errors = self._comms, self._addrs, self._secs, self._errors
        types, sources, families = RECORD_TYPES, PID_SOURCES, FAMILY
        out = []
        append = out.append
        seq = first_seq - 1
        for ev in events:
            seq += 1
            sec, ns = divmod(ev.ts_ns + offset, 1_000_000_000)
            fam = ev.family
            flags = ev.flags
            kind = ev.type
            err = ev.err
            comm = comms.get(ev.comm) or self._comm(ev.comm)
            saddr = addrs.get((fam, ev.saddr)) or self._addr(fam, ev.saddr)
            daddr = addrs.get((fam, ev.daddr)) or self._addr(fam, ev.daddr)
            head = (f'{{"type":"{types[kind]}","ts":"{secs.get(sec) or self._second(sec)}.{ns // 1000:06d}Z",'
                    f'"host":{host},"run_id":{run_id},"seq":{seq},"pid":{ev.pid},"comm":{comm},'
                    f'"cgroup_id":{ev.cgroup_id},"pid_source":"{sources.get(ev.pid_source, "unknown")}",'
                    f'"tid":{ev.tid},"family":"{families.get(fam) or fam}","saddr":"{saddr}","sport":{ev.sport},'
                    f'"daddr":"{daddr}","dport":{ev.dport},"incomplete":{_BOOL[flags & L.F_INCOMPLETE != 0]}')
            if kind == L.EV_CLOSE:
                end, est = ev.end_ns, ev.established_ns
                duration = ("null" if flags & L.F_PREEXISTING or not end or not est or end < est
                            else (end - est) // 1000)
                append((f'{head},"direction":"{DIRECTION.get(ev.direction, "outbound")}","duration_us":{duration},'
                        f'"retransmits":{ev.retransmits},"syn_retransmits":{ev.syn_retransmits},'
                        f'"synack_retransmits":{ev.synack_retransmits},"resets_sent":{ev.resets_sent},'
                        f'"resets_received":{ev.resets_received},'
                        f'"closed_by":"{CLOSED_BY.get(ev.closed_by, "local")}","errno":{err},'
                        f'"error":{errors.get(err) or self._error(err)},'
                        f'"time_wait":{_BOOL[flags & L.F_TIME_WAIT != 0]},'
                        f'"preexisting":{_BOOL[flags & L.F_PREEXISTING != 0]}}}').encode())
            elif kind == L.EV_CONNECT:
                failed = bool(err) or bool(flags & L.F_ABORTED)  # decode.events.connect_failed
                end, start = (ev.end_ns if failed else ev.established_ns), ev.start_ns
                latency = "null" if not end or not start or end < start else (end - start) // 1000
                error = (errors.get(err) or self._error(err) if err else _ABORTED) if failed else "null"
                append((f'{head},"result":"{"error" if failed else "ok"}","errno":{err},"error":{error},'
                        f'"latency_us":{latency},"syn_retransmits":{ev.syn_retransmits},'
                        f'"resets_received":{ev.resets_received},'
                        f'"syscall_only":{_BOOL[flags & L.F_SYSCALL_ONLY != 0]}}}').encode())
            else:
                append(f'{head},"synack_retransmits":{ev.synack_retransmits}}}'.encode())
        return out
