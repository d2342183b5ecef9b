"""Plain diagnoses from window aggregates: raised once when a condition
starts, and once more when it clears.

Each rule looks at one (process, destination) in one window. The
thresholds are configurable; the defaults are documented in the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .window import DestStats, WindowResult


@dataclass(frozen=True)
class DiagnosisThresholds:
    churn_per_s: float = 10.0  # new outbound connections per second to one destination
    churn_short_share: float = 0.8  # ...of which at least this share lived < short_lifetime_us
    refused: int = 1  # ECONNREFUSED per window
    exhausted: int = 1  # EADDRNOTAVAIL per window
    timeouts: int = 1  # ETIMEDOUT per window
    syn_retransmits: int = 3  # SYN retransmits per window (stalls before any timeout)
    unreachable: int = 1  # EHOSTUNREACH + ENETUNREACH per window
    resets_per_s: float = 5.0  # RSTs sent + received per second
    retransmits_per_s: float = 10.0  # data retransmits per second
    port_risk_share: float = 0.5  # share of the usable ephemeral range held for one destination
    slow_connect_failure_s: float = 10.0  # a failed connect that waited this long: no connect timeout set
    established_timeouts: int = 1  # established connections ended by ETIMEDOUT per window
    idle_without_keepalive_s: float = 300.0  # idle this long (a common firewall idle timeout) without keepalive
    backlog_scans: int = 3  # Recv-Q or Send-Q non-zero on one connection for this many socket scans in a row
    accept_overflows: int = 1  # ListenOverflows of a namespace between two scans, with a listener's queue full
    nagle_holds: int = 10  # small writes Nagle's algorithm held back per window, to one destination


@dataclass(frozen=True)
class Rule:
    kind: str
    severity: str
    hint: str
    applies: Callable[[DestStats, float, DiagnosisThresholds], dict | None]  # evidence, or None
    directions: tuple[str, ...] = ("outbound",)  # which destinations it looks at


def _churn(d, secs, t):
    outbound = d.connects_ok + d.connects_failed
    rate = outbound / secs
    share = d.short_lived / d.closes if d.closes else 0.0
    if rate >= t.churn_per_s and share >= t.churn_short_share:
        return {"new_connections_per_s": round(rate, 3), "short_lived_share": round(share, 4),
                "closes": d.closes, "active_closes": d.active_closes}
    return None


def _errno_rule(*names: str, threshold: str, with_syn_retransmits: bool = False):
    def check(d, secs, t):
        n = sum(d.failures.get(name, 0) for name in names)
        if n >= getattr(t, threshold):
            ev = {"failures": {name: d.failures[name] for name in names if d.failures.get(name)},
                  "connects_ok": d.connects_ok}
            if with_syn_retransmits:
                ev["syn_retransmits"] = d.syn_retransmits
            return ev
        return None

    return check


# Errnos that explain a connect's SYN retransmits by themselves: the kernel
# retransmits while it resolves the neighbour, then gets an ICMP error.
_EXPLAINED_STALLS = ("EHOSTUNREACH", "ENETUNREACH")


def _timeout(d, secs, t):
    n = d.failures.get("ETIMEDOUT", 0)
    # A connect the application abandoned after SYN retransmits is a timeout
    # too, its own (no errno: ABORTED); without a retransmit it was dropped
    # for other reasons (a happy-eyeballs race lost, a shutdown).
    abandoned = d.failures.get("ABORTED", 0) if d.syn_retransmits else 0
    # SYN retransmits alone raise it only when no unreachable failure explains
    # them: one cause, one diagnosis (`unreachable` carries them then)
    stalled = d.syn_retransmits >= t.syn_retransmits and not any(d.failures.get(e) for e in _EXPLAINED_STALLS)
    if n + abandoned >= t.timeouts or stalled:
        failures = {k: v for k, v in (("ETIMEDOUT", n), ("ABORTED", abandoned)) if v}
        return {"failures": failures, "abandoned_by_application": abandoned, "syn_retransmits": d.syn_retransmits,
                "waited_us": d.failure_wait_max_us if d.connects_failed else None, "connects_ok": d.connects_ok}
    return None


def _slow_failure(d, secs, t):
    if d.connects_failed and d.failure_wait_max_us >= t.slow_connect_failure_s * 1_000_000:
        return {"waited_us": d.failure_wait_max_us, "failures": dict(d.failures), "connects_failed": d.connects_failed}
    return None


def _established_timeout(d, secs, t):
    n = d.close_errors.get("ETIMEDOUT", 0)
    if n >= t.established_timeouts:
        return {"close_errors": dict(d.close_errors), "retransmits": d.retransmits, "closes": d.closes}
    return None


def _resets(d, secs, t):
    rate = (d.resets_sent + d.resets_received) / secs
    if rate >= t.resets_per_s:
        return {"resets_sent": d.resets_sent, "resets_received": d.resets_received, "resets_per_s": round(rate, 3)}
    return None


def _nagle(d, secs, t):
    if d.nagle_holds >= t.nagle_holds:
        return {"nagle_holds": d.nagle_holds, "nagle_holds_per_s": round(d.nagle_holds / secs, 3)}
    return None


def _retransmits(d, secs, t):
    rate = d.retransmits / secs
    if rate >= t.retransmits_per_s:
        return {"retransmits": d.retransmits, "retransmits_per_s": round(rate, 3)}
    return None


RULES = (
    Rule("connection_churn", "warning",
         "a new connection per request and most close within the short-lifetime threshold: likely no connection "
         "pool; reuse connections (a pool or keep-alive)", _churn),
    Rule("port_exhausted", "critical",
         "connect() failed with EADDRNOTAVAIL: no ephemeral port left for this destination (TIME_WAIT holds them); "
         "most likely no connection pool", _errno_rule("EADDRNOTAVAIL", threshold="exhausted")),
    Rule("connect_refused", "warning", "nothing listens on that port, or a firewall rejects",
         _errno_rule("ECONNREFUSED", threshold="refused")),
    Rule("connect_timeout", "warning", "packets silently dropped: firewall or black-holed route", _timeout),
    Rule("slow_connect_failure", "warning",
         "failed connects waited this long for the kernel to give up: set a connect timeout of 1 to 5 s "
         "in the application", _slow_failure),
    Rule("unreachable", "warning", "routing or ICMP unreachable: check the route and the path to the host",
         _errno_rule("EHOSTUNREACH", "ENETUNREACH", threshold="unreachable", with_syn_retransmits=True)),
    Rule("established_timeout", "warning",
         "established connections timed out (data or keepalive probes never acknowledged): the peer or the path "
         "died; check them, and bound the wait with TCP_USER_TIMEOUT", _established_timeout),
    Rule("reset_storm", "warning",
         "connections are being reset: the peer aborts (crash, SO_LINGER 0, overload) or a middlebox kills them",
         _resets),
    Rule("retransmit_rate", "info", "packets are lost on the path: congestion, a lossy link or a dropping firewall",
         _retransmits),
    Rule("nagle_delay", "warning",
         "small writes wait for the ACK of the previous one (Nagle's algorithm; against a delayed ACK up to 40 ms "
         "a request): set TCP_NODELAY, or write each request in one call", _nagle, ("outbound", "inbound")),
)

PORT_RISK_HINT = ("ephemeral ports to this destination are running out (TIME_WAIT holds them): pool connections, "
                  "or widen net.ipv4.ip_local_port_range")


@dataclass
class Finding:
    kind: str
    severity: str
    state: str  # "raised" | "cleared"
    proc: tuple[int, str, int]  # (0, comm, cgroup id) for a command's processes together
    dest: tuple[str, int, str]
    evidence: dict
    hint: str
    scope: str = "process"  # or "command": every process of one command in one cgroup
    names: dict | None = None  # a command's cgroup-level names (unit, container), taken from its processes


# Names of a process that hold for its whole cgroup, so for a command's group too.
_GROUP_NAMES = ("cgroup_path", "unit", "container_id", "runtime", "pod_uid")



class Diagnoser:
    def __init__(self, thresholds: DiagnosisThresholds | None = None):
        self.t = thresholds or DiagnosisThresholds()
        self.active: dict[tuple, Finding] = {}

    def retune(self, thresholds: DiagnosisThresholds) -> None:
        """A reload's new thresholds, for the next evaluation."""
        self.t = thresholds

    def evaluate(self, w: WindowResult, port_usage: dict | None = None, live=None) -> list[Finding]:
        """port_usage: (proc, dest) -> {"used": n, "usable": n, "time_wait": n}, from agent/ports; live:
        the latest socket scan's ScanResult (aggregate/sockets.py)."""
        now: dict[tuple, Finding] = dict(live.findings) if live is not None else {}
        for proc, p in w.procs.items():
            for dest, d in p.dests.items():
                for rule in RULES:
                    if dest[2] not in rule.directions:
                        continue
                    ev = rule.applies(d, w.seconds, self.t)
                    if ev is not None:
                        now[(rule.kind, proc, dest)] = Finding(rule.kind, rule.severity, "raised", proc, dest, ev,
                                                               rule.hint)
                usage = (port_usage or {}).get((proc, dest)) if dest[2] == "outbound" else None
                if usage and usage["usable"]:
                    f = self._port_risk(proc, dest, d, w.seconds, usage)
                    if f:
                        now[(f.kind, proc, dest)] = f
        self._commands(w, now)
        if live is not None and live.overflowing:
            self._point_at_accept_queues(now, live.overflowing)
        out = [f for k, f in now.items() if k not in self.active]
        for k, f in self.active.items():
            if k not in now:
                out.append(Finding(f.kind, f.severity, "cleared", f.proc, f.dest, {}, f.hint, f.scope, f.names))
        self.active = {k: self.active.get(k, f) for k, f in now.items()}
        return out

    def _commands(self, w: WindowResult, now: dict) -> None:
        """The same rules over every process of one command in one cgroup (a
        unit, a container, a login session), per destination: a script that
        runs one short-lived process per request, or a pre-fork worker pool,
        churns as a command, never as one pid. A pre-fork server's listening
        port too: its accepts are credited to the parent that listens, its
        workers' reads and writes (and their Nagle holds) to each worker,
        all under one command and cgroup. Raised only where no single
        process of the command raised the same kind for that destination."""
        groups: dict[tuple[str, int], list] = {}
        for proc, p in w.procs.items():
            groups.setdefault((proc[1], proc[2]), []).append((proc, p))
        for (comm, cgroup_id), members in groups.items():
            if len(members) < 2:
                continue
            merged: dict[tuple, DestStats] = {}
            pids: dict[tuple, set] = {}
            for proc, p in members:
                for dest, d in p.dests.items():
                    merged.setdefault(dest, DestStats()).merge(d)
                    pids.setdefault(dest, set()).add(proc[0])
            group = (0, comm, cgroup_id)
            names = {k: v for k, v in members[0][1].names.items() if k in _GROUP_NAMES}
            for dest, d in merged.items():
                if len(pids[dest]) < 2:
                    continue
                for rule in RULES:
                    if dest[2] not in rule.directions or any((rule.kind, proc, dest) in now for proc, _ in members):
                        continue
                    ev = rule.applies(d, w.seconds, self.t)
                    if ev is not None:
                        ev["processes"] = len(pids[dest])
                        now[(rule.kind, group, dest)] = Finding(rule.kind, rule.severity, "raised", group, dest, ev,
                                                                rule.hint, "command", names)

    @staticmethod
    def _point_at_accept_queues(now: dict, overflowing: list) -> None:
        """Clients' timeouts to a listener whose accept queue overflows are
        that listener's doing, not a firewall's: their finding says so (and
        is keyed apart, so one raised before the overflow was seen clears)."""
        from .sockets import TIMEOUT_TO_ACCEPT_QUEUE_HINT

        for key in [k for k in now if k[0] in ("connect_timeout", "slow_connect_failure")]:
            f = now[key]
            daddr, dport, _direction = f.dest
            for lst, owner in overflowing:
                if lst.port == dport and (lst.addr == daddr or lst.raw_addr == bytes(16)):
                    f.hint = TIMEOUT_TO_ACCEPT_QUEUE_HINT
                    f.evidence["accept_queue_overflow"] = {"pid": owner[0], "comm": owner[1], "port": lst.port}
                    now[key + ("accept_queue",)] = now.pop(key)
                    break

    def _port_risk(self, proc, dest, d: DestStats, secs: float, usage: dict) -> Finding | None:
        share = usage["used"] / usage["usable"]
        if share < self.t.port_risk_share:
            return None
        rate = (d.connects_ok + d.connects_failed) / secs
        left = max(0, usage["usable"] - usage["used"])
        evidence = {"used_ports": usage["used"], "usable_ports": usage["usable"], "time_wait": usage["time_wait"],
                    "time_wait_left_by_process": usage.get("time_wait_left_by_process"),
                    "used_share": round(share, 4), "new_connections_per_s": round(rate, 3),
                    "seconds_to_exhaustion": round(left / rate, 1) if rate > 0 else None}
        return Finding("port_exhaustion_risk", "warning", "raised", proc, dest, evidence, PORT_RISK_HINT)
