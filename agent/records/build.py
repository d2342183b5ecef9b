"""ConnEvent -> schema-v1 record (a dict). See schema/record-v1.schema.json.

Field names here are a public contract: add fields, never rename one.
`seq` is not set here: the emitter numbers records as it writes them.
"""

from __future__ import annotations

import os
import socket
import uuid

from ..decode import layout as L
from ..decode.events import ConnEvent, connect_failed
from ..decode.text import ABORTED, addr_text, comm_text, error_name, format_addr  # noqa: F401  (format_addr: API)
from ..procfs import cgroup_id
from .clock import WallClock

PID_SOURCES = {
    L.PID_SRC_UNKNOWN: "unknown",
    L.PID_SRC_CONNECT: "connect",
    L.PID_SRC_SYSCALL: "syscall",
    L.PID_SRC_LISTENER: "listener",
    L.PID_SRC_FIRST_IO: "first_io",
    L.PID_SRC_CLOSE: "close",
}
CLOSED_BY = {L.CLOSED_BY_NONE: "local", L.CLOSED_BY_LOCAL: "local", L.CLOSED_BY_PEER: "peer",
             L.CLOSED_BY_RESET: "reset"}
DIRECTION = {L.DIR_OUTBOUND: "outbound", L.DIR_INBOUND: "inbound"}
FAMILY = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
RECORD_TYPES = {L.EV_CONNECT: "connect", L.EV_ACCEPT: "accept", L.EV_CLOSE: "close"}
# a close record's socket health, in record order (bpf/health.c)
HEALTH_FIELDS = ("bytes_sent", "bytes_received", "srtt_us", "min_rtt_us", "mss", "keepalive", "keepalive_idle_s",
                 "nodelay")


def _us(end_ns: int, start_ns: int) -> int | None:
    if not end_ns or not start_ns or end_ns < start_ns:
        return None
    return (end_ns - start_ns) // 1000


class RecordBuilder:
    """Builds records for one agent: host name and clock are fixed."""

    def __init__(self, host: str | None = None, clock: WallClock | None = None, run_id: str | None = None,
                 connect_on_close: bool = False, health_unread: frozenset[str] = frozenset(), hz: int = 0):
        self.host = host or socket.gethostname()
        # a close record's health fields the kernel cannot give (null), and
        # CONFIG_HZ for keepalive_idle_s (the kernel keeps it in jiffies)
        self.health_unread = health_unread if hz else health_unread | {"keepalive_idle_s"}
        self.hz = hz
        # agent.connection_records = "ends": no connect or accept record for a
        # connection that established, so its close says what they said
        self.connect_on_close = connect_on_close
        # Delivery to Kafka is at least once: (host, run_id, seq) names a
        # record uniquely, so consumers can drop the duplicates of a retry.
        self.run_id = run_id or uuid.uuid4().hex
        self.clock = clock or WallClock()

    def base(self, rtype: str, ts: str, pid: int, comm: str, cgroup_id: int, pid_source: str) -> dict:
        return {"type": rtype, "ts": ts, "host": self.host, "run_id": self.run_id, "seq": None, "pid": pid, "comm": comm,
                "cgroup_id": cgroup_id, "pid_source": pid_source}

    def from_event(self, ev: ConnEvent) -> dict:
        fam = FAMILY.get(ev.family, str(ev.family))
        rec = self.base(
            RECORD_TYPES[ev.type],
            self.clock.rfc3339(ev.ts_ns), ev.pid, comm_text(ev.comm), ev.cgroup_id,
            PID_SOURCES.get(ev.pid_source, "unknown"),
        )
        rec["tid"] = ev.tid
        rec["family"] = fam
        rec["saddr"] = addr_text(ev.family, ev.saddr)
        rec["sport"] = ev.sport
        rec["daddr"] = addr_text(ev.family, ev.daddr)
        rec["dport"] = ev.dport
        rec["incomplete"] = bool(ev.flags & L.F_INCOMPLETE)
        if ev.type == L.EV_CONNECT:
            failed = connect_failed(ev)
            rec["result"] = "error" if failed else "ok"
            rec["errno"] = ev.err
            rec["error"] = (error_name(ev.err) if ev.err else ABORTED) if failed else None
            end = ev.end_ns if failed else ev.established_ns
            rec["latency_us"] = _us(end, ev.start_ns)
            rec["syn_retransmits"] = ev.syn_retransmits
            rec["resets_received"] = ev.resets_received
            rec["syscall_only"] = bool(ev.flags & L.F_SYSCALL_ONLY)
        elif ev.type == L.EV_ACCEPT:
            rec["synack_retransmits"] = ev.synack_retransmits
        else:
            rec["direction"] = DIRECTION.get(ev.direction, "outbound")
            rec["duration_us"] = None if ev.flags & L.F_PREEXISTING else _us(ev.end_ns, ev.established_ns)
            rec["retransmits"] = ev.retransmits
            rec["syn_retransmits"] = ev.syn_retransmits
            rec["synack_retransmits"] = ev.synack_retransmits
            rec["resets_sent"] = ev.resets_sent
            rec["resets_received"] = ev.resets_received
            rec["closed_by"] = CLOSED_BY.get(ev.closed_by, "local")
            rec["errno"] = ev.err
            rec["error"] = error_name(ev.err) if ev.err else None
            rec["time_wait"] = bool(ev.flags & L.F_TIME_WAIT)
            rec["preexisting"] = bool(ev.flags & L.F_PREEXISTING)
            if self.connect_on_close:
                rec["connect_latency_us"] = _us(ev.established_ns, ev.start_ns)
            rec.update(self.health(ev))
        return rec

    def health(self, ev: ConnEvent) -> dict:
        """A close record's socket health fields: null when not read (a
        connection that never established, or a skipped CLOSE run) or not
        readable on this kernel."""
        if not ev.health & L.H_READ:
            return dict.fromkeys(HEALTH_FIELDS)
        out = {
            "bytes_sent": ev.bytes_sent,
            "bytes_received": ev.bytes_received,
            "srtt_us": ev.srtt_us,
            "min_rtt_us": ev.min_rtt_us,
            "mss": ev.mss,
            "keepalive": bool(ev.health & L.H_KEEPALIVE),
            "keepalive_idle_s": ev.keepalive_idle // self.hz if ev.keepalive_idle and self.hz else None,
            "nodelay": bool(ev.health & L.H_NODELAY),
        }
        for name in self.health_unread:
            out[name] = None
        return out

    def agent_record(self, event: str, **fields) -> dict:
        rec = self.base("agent", self.clock.now(), os.getpid(), "connscope", self_cgroup_id(), "agent")
        rec["event"] = event
        rec.update(fields)
        return rec

    def lost_record(self, count: int, stage: str, reason: str,
                    seq_first: int | None = None, seq_last: int | None = None) -> dict:
        rec = self.base("lost", self.clock.now(), os.getpid(), "connscope", self_cgroup_id(), "agent")
        rec.update(count=count, stage=stage, reason=reason, seq_first=seq_first, seq_last=seq_last)
        return rec


_SELF_CGROUP: list[int] = []


def self_cgroup_id() -> int:
    """The agent's own cgroup v2 id (the inode of its cgroup directory)."""
    if not _SELF_CGROUP:
        _SELF_CGROUP.append(cgroup_id(os.getpid()))
    return _SELF_CGROUP[0]
