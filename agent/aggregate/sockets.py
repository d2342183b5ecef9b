"""Diagnoses from the live sockets: what records of connection ends cannot see.

A periodic scan (agent/ports/live.py: sock_diag in each network namespace a
traced process lives in) reads every connection's queues, pending timer and
idle time, and every listener's accept queue, and ties each connection to
its process through the kernel's own per-socket state (Tracer.socket_owners:
the 4-tuple of a tracked connection; one that predates the agent has no
owner until it ends, and is left out). Conditions found at the latest scan
become findings at the next window's end, where the Diagnoser raises and
clears them with the rest:

- idle_without_keepalive: an established outbound connection with nothing
  sent or received (acks included) for longer than the threshold: a stateful
  firewall or NAT drops such a flow silently, and the next request on it
  hangs. With keepalive on, its probes come further apart than that: the
  first after TCP_KEEPIDLE, each next one TCP_KEEPINTVL after the last
  answer (75 s by default, however low TCP_KEEPIDLE is).
- recv_backlog / send_backlog: Recv-Q (received, not read by the
  application) or Send-Q (not yet acknowledged by the peer) non-zero on the
  same connection for N scans in a row.
- accept_queue_overflow: the namespace's ListenOverflows grew and a
  listener's accept queue is at its backlog (held while it stays there): its
  owner does not accept() fast enough, and clients time out (not a firewall).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..decode import layout as L
from ..decode.text import comm_text
from ..ports import PortReadError
from ..ports.live import Listener, listen_counters, listeners, live_sockets
from .diagnose import DiagnosisThresholds, Finding

IDLE_HINT_OFF = ("idle past a stateful firewall's or NAT's idle timeout with keepalive off: the middlebox may drop "
                 "the flow silently; enable SO_KEEPALIVE with TCP_KEEPIDLE and TCP_KEEPINTVL below that timeout, "
                 "or ping from the pool")
IDLE_HINT_LATE = ("idle past the threshold with keepalive on: its probes come further apart (TCP_KEEPIDLE before "
                  "the first, TCP_KEEPINTVL between the next; 2 h and 75 s by default): set both below the "
                  "middlebox's idle timeout")
RECV_HINT = "the application does not read as fast as data arrives: a slow or blocked reader (Recv-Q stays non-zero)"
SEND_HINT = ("data waits for the peer's acknowledgement: the peer does not read (its window is closed) or the path "
             "drops or slows packets (Send-Q stays non-zero)")
ACCEPT_HINT = ("the accept queue is full: this process does not accept() connections as fast as they arrive, so "
               "the kernel drops clients' handshakes and they time out; accept faster or raise listen()'s backlog "
               "(capped by net.core.somaxconn)")
TIMEOUT_TO_ACCEPT_QUEUE_HINT = ("the server's accept queue is full (see its accept_queue_overflow diagnosis): it "
                                "does not accept() fast enough; not a firewall")

Proc = tuple[int, str, int]


@dataclass
class _Streak:
    recv: int = 0
    send: int = 0
    recv_q: int = 0
    send_q: int = 0


@dataclass
class ScanResult:
    """What scans found: findings keyed as the Diagnoser keys them."""
    findings: dict = field(default_factory=dict)  # (kind, proc, dest) -> Finding
    overflowing: list = field(default_factory=list)  # (Listener, owner proc) with a full accept queue

    def merge(self, later: "ScanResult") -> None:
        """A later scan's findings over this one's (the later evidence wins)."""
        self.findings.update(later.findings)
        self.overflowing += later.overflowing


class SocketWatch:
    def __init__(self, namespaces: Callable[[], dict[int, str]], owners: Callable[[], dict],
                 listener_owners: Callable[[], dict], names: Callable[[Proc], dict],
                 thresholds: DiagnosisThresholds | None = None):
        self.namespaces = namespaces  # netns inode -> a path to it (the processes' namespaces)
        self.owners = owners  # Tracer.socket_owners
        self.listener_owners = listener_owners  # Tracer.listener_owners
        self.names = names  # proc -> unit, command line... (the aggregator's, else the enricher's)
        self.t = thresholds or DiagnosisThresholds()
        self._streaks: dict[tuple, _Streak] = {}
        self._overflows: dict[int, tuple[int, int]] = {}  # netns inode -> (ListenOverflows, ListenDrops)
        # netns inode -> {(address, port): (overflows, drops) since raised} of the listeners raised
        self._overflowing: dict[int, dict] = {}
        self.latest = ScanResult()
        self._since = ScanResult()  # every scan's findings since the last take()
        self.errors = 0
        self.sockets = 0  # in the latest scan

    def retune(self, thresholds: DiagnosisThresholds) -> None:
        self.t = thresholds

    def scan(self) -> ScanResult:
        owners = self.owners()
        lowners = self.listener_owners()
        result = ScanResult()
        streaks: dict[tuple, _Streak] = {}
        self.sockets = 0
        for ino, path in self.namespaces().items():
            try:
                socks = live_sockets(path)
                lsocks = listeners(path)
                counters = listen_counters(path)
            except PortReadError:
                self.errors += 1
                continue
            self.sockets += len(socks)
            for s in socks:
                owner = owners.get((s.raw_saddr, s.sport, s.raw_daddr, s.dport))
                if owner is None:
                    continue
                proc, dest = self._proc_dest(owner, s)
                self._idle(result, proc, dest, s)
                if s.state != "ESTABLISHED":
                    continue  # CLOSE_WAIT's Recv-Q holds the peer's FIN: not a backlog
                key = (ino, s.raw_saddr, s.sport, s.raw_daddr, s.dport)
                st = streaks[key] = self._streaks.get(key) or _Streak()
                st.recv = st.recv + 1 if s.recv_q else 0
                st.send = st.send + 1 if s.send_q else 0
                st.recv_q, st.send_q = s.recv_q, s.send_q
                self._backlog(result, proc, dest, st)
            self._accept_queues(result, ino, lsocks, counters, lowners)
        self._streaks = streaks
        self.latest = result
        self._since.merge(result)
        return result

    def take(self) -> ScanResult:
        """What the scans since the last take found, for one window's
        diagnoses: a condition seen by any of them (an accept queue's
        overflows come in bursts, at the clients' SYN retransmits) holds
        for the window."""
        out, self._since = self._since, ScanResult()
        return out

    # --- per socket ----------------------------------------------------------
    def _proc_dest(self, owner, s) -> tuple[Proc, tuple]:
        pid, comm, cgroup_id, direction = owner
        proc = (pid, comm_text(comm), cgroup_id)
        if direction == L.DIR_INBOUND:
            return proc, ("*", s.sport, "inbound")
        return proc, (s.daddr, s.dport, "outbound")

    def _finding(self, result: ScanResult, kind: str, severity: str, proc: Proc, dest: tuple, hint: str) -> Finding:
        key = (kind, proc, dest)
        f = result.findings.get(key)
        if f is None:
            f = result.findings[key] = Finding(kind, severity, "raised", proc, dest, {}, hint,
                                               names=self.names(proc) or {})
        return f

    def _idle(self, result: ScanResult, proc: Proc, dest: tuple, s) -> None:
        # Outbound only: a pool's client owns the fix, and a server's end of a
        # flow kept alive by the client's probes looks idle (a probe is an
        # out-of-window segment: it updates none of the server's times).
        limit_ms = self.t.idle_without_keepalive_s * 1000
        if (dest[2] != "outbound" or s.state != "ESTABLISHED" or s.idle_ms is None or s.idle_ms < limit_ms
                or s.keepalive is None):
            return
        f = self._finding(result, "idle_without_keepalive", "warning", proc, dest,
                          IDLE_HINT_LATE if s.keepalive else IDLE_HINT_OFF)
        ev = f.evidence
        ev["connections"] = ev.get("connections", 0) + 1
        ev["idle_s_max"] = max(ev.get("idle_s_max", 0), s.idle_ms // 1000)
        ev["keepalive"] = ev.get("keepalive", False) or s.keepalive
        ev["idle_threshold_s"] = self.t.idle_without_keepalive_s
        if s.keepalive:
            ev["next_probe_in_s"] = s.keepalive_in_ms // 1000 if s.keepalive_in_ms is not None else None

    def _backlog(self, result: ScanResult, proc: Proc, dest: tuple, st: _Streak) -> None:
        n = self.t.backlog_scans
        for kind, scans, queue, hint in (("recv_backlog", st.recv, st.recv_q, RECV_HINT),
                                         ("send_backlog", st.send, st.send_q, SEND_HINT)):
            if scans < n:
                continue
            f = self._finding(result, kind, "warning", proc, dest, hint)
            ev = f.evidence
            ev["connections"] = ev.get("connections", 0) + 1
            ev["queue_bytes_max"] = max(ev.get("queue_bytes_max", 0), queue)
            ev["scans"] = max(ev.get("scans", 0), scans)

    # --- listeners -----------------------------------------------------------
    def _accept_queues(self, result: ScanResult, ino: int, lsocks: list[Listener], counters: tuple[int, int],
                       lowners: dict) -> None:
        before = self._overflows.get(ino)
        self._overflows[ino] = counters
        if before is None:
            # The first scan of a namespace is its baseline, unless a queue
            # is full now: then the overflows counted so far are taken as
            # this one's (a namespace is first scanned when its listener's
            # first connection shows, while its clients may already wait).
            if not any(lst.accept_queue >= lst.backlog for lst in lsocks):
                return
            before = (0, 0)
        overflows, drops = counters[0] - before[0], counters[1] - before[1]
        was = self._overflowing.pop(ino, {})
        now = self._overflowing[ino] = {}
        for lst in lsocks:
            # Raised by overflows while the queue is full, and held while it
            # stays full: every handshake that arrives meanwhile is dropped,
            # though the clients' retries (and so the counter) come in bursts.
            where = (lst.raw_addr, lst.port)
            if lst.accept_queue < lst.backlog or (overflows < self.t.accept_overflows and where not in was):
                continue
            # the namespace's counts since the listener was raised
            total = now[where] = tuple(a + b for a, b in zip(was.get(where, (0, 0)), (overflows, drops)))
            owner = lowners.get((lst.raw_addr, lst.port, lst.family)) or lowners.get((bytes(16), lst.port, lst.family))
            if owner is None:
                continue
            pid, comm, cgroup_id = owner
            proc = (pid, comm_text(comm), cgroup_id)
            f = self._finding(result, "accept_queue_overflow", "critical", proc, ("*", lst.port, "inbound"),
                              ACCEPT_HINT)
            f.evidence.update(listen_overflows=total[0], listen_drops=total[1], accept_queue=lst.accept_queue,
                              backlog=lst.backlog, address=lst.addr)
            result.overflowing.append((lst, proc))
