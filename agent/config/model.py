"""The typed configuration: one dataclass per TOML table.

Each field is one key. Its metadata carries the help text and, where the
values are a closed set, `choices`; `minimum` bounds numbers. The loader
(agent/config/load.py) fills these from the file, then `CONNSCOPE_*`
environment variables, then flags, and nothing else reads configuration.

`reload` says what SIGHUP can change without reloading the BPF programs:
"live" keys apply at once; "restart" keys are reported as needing one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..aggregate.diagnose import DiagnosisThresholds
from ..aggregate.window import Thresholds

DEFAULT_PATH = "/etc/connscope/connscope.toml"


def key(help: str, *, choices: tuple = (), minimum: float | None = None, reload: str = "live", **kw):
    """A configuration key: a dataclass field with its documentation."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "reload": reload}
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata=meta)
    return field(default=kw["default"], metadata=meta)


@dataclass
class AgentSection:
    output: str = key("where records go: stdout (JSON lines) or kafka (see [kafka])",
                      choices=("stdout", "kafka"), default="stdout")
    connections: bool = key("emit one record per connection attempt, connection and close; "
                            "false = only window summaries, diagnoses and failures", default=True)
    connection_records: str = key(
        "per-connection records: all = connect, accept and close (four per loopback connection); ends = one "
        "close record per connection end carrying its connect latency, plus every failed attempt",
        choices=("all", "ends"), reload="restart", default="all")
    window: float = key("summary window length, seconds", minimum=1.0, default=60.0)
    status_interval: float = key("seconds between `agent` status records (0 = none)", minimum=0.0, default=60.0)
    socket_scan: float = key("seconds between scans of live sockets (sock_diag) for idle connections, queue backlogs "
                             "and accept queue overflows, at most one window; 0 = no scans", minimum=0.0,
                             default=10.0)
    cpu_budget: float = key("share of one core the agent's user-space loop may use before it samples "
                            "per-connection records (summaries stay exact)", minimum=0.01, default=0.25)
    failure_records: int = key("failure records per process and destination in one window (on each CPU) "
                               "before the kernel only counts the rest (summaries: failure_records_folded); "
                               "0 = send every one", minimum=0, default=100)
    # About 700 bytes per queued event: 50,000 bound the queue near 35 MB, on
    # top of the kernel's own ring buffer (8 MiB, about 58,000 records).
    queue_max: int = key("events the user-space queue holds before it drops (counted as lost, stage queue)",
                         minimum=1000, reload="restart", default=50_000)
    buffer_pages: int = key("kernel ring buffer size in 4 KiB pages, a power of two",
                            minimum=1, reload="restart", default=2048)
    strict: bool = key("fail at start when an optional hook cannot attach", reload="restart", default=False)
    force_hooks: list[str] = key("HOOK=METHOD pairs that override probing, e.g. event_buffer=perf; "
                                 "HOOK=off leaves an optional hook out, e.g. nagle=off",
                                 reload="restart", default_factory=list)
    state_dir: str = key("directory for state that outlives a restart (the Kafka spool)",
                         reload="restart", default="/var/lib/connscope")
    cmdline: str = key("command lines in summaries and diagnoses: scrubbed (secrets masked: values of "
                       "arguments named like a sensitive word, known password flags, URL passwords, auth "
                       "headers), full, or off (null)", choices=("scrubbed", "full", "off"),
                       reload="restart", default="scrubbed")
    sensitive_words: list[str] = key("words added to the built-in list (password, secret, token, key, auth, ...) "
                                     "that make an argument's value a secret", reload="restart",
                                     default_factory=list)
    prometheus: str = key("HOST:PORT for a Prometheus endpoint with the agent's counters, empty = off; "
                          "keep it on loopback", reload="restart", default="")
    prometheus_destinations: int = key("Prometheus connection metrics: destinations per process with their own "
                                       "series; the rest are summed into destination=\"other\"", minimum=1,
                                       reload="restart", default=10)
    prometheus_series: int = key("Prometheus connection metrics: series per metric; rows past it are summed "
                                 "into one series labelled \"other\" (and counted)", minimum=10,
                                 reload="restart", default=5000)


@dataclass
class FiltersSection:
    pids: list[int] = key("only these process ids (empty = all)", default_factory=list)
    comms: list[str] = key("only these command names, exact, at most 15 bytes", default_factory=list)
    ports: list[int] = key("only connections with one of these ports at either end", default_factory=list)
    family: str = key("address family", choices=("any", "ipv4", "ipv6"), default="any")
    failures: bool = key("only failed attempts and abnormal closes", default=False)


_THRESHOLD_HELP = {
    "churn_per_s": "connection_churn: new outbound connections per second to one destination",
    "churn_short_share": "connection_churn: ...of which at least this share lived less than short_lifetime_us",
    "refused": "connect_refused: ECONNREFUSED per window (nothing listens there)",
    "exhausted": "port_exhausted: EADDRNOTAVAIL per window (no ephemeral port left)",
    "timeouts": "connect_timeout: ETIMEDOUT, and connects the application abandoned after SYN retransmits, "
                "per window (firewall drops or black hole)",
    "syn_retransmits": "connect_timeout: SYN retransmits per window",
    "unreachable": "unreachable: EHOSTUNREACH + ENETUNREACH per window",
    "resets_per_s": "reset_storm: RSTs sent + received per second",
    "retransmits_per_s": "retransmit_rate: data retransmits per second",
    "port_risk_share": "port_exhaustion_risk: share of the usable ephemeral port range held in TIME_WAIT "
                       "for one destination",
    "established_timeouts": "established_timeout: established connections ended by ETIMEDOUT per window",
    "slow_connect_failure_s": "slow_connect_failure: seconds a failed connect waited (no connect timeout set)",
    "idle_without_keepalive_s": "idle_without_keepalive: seconds an established connection sent and received "
                                "nothing, acks included (300 = a common firewall idle timeout)",
    "backlog_scans": "recv_backlog / send_backlog: socket scans in a row with Recv-Q / Send-Q non-zero on one "
                     "connection",
    "accept_overflows": "accept_queue_overflow: a namespace's ListenOverflows between two socket scans",
    "nagle_holds": "nagle_delay: small writes Nagle's algorithm held back per window, to one destination",
    "short_lifetime_us": "a connection shorter than this (microseconds) counts as short-lived",
}


def _threshold_section() -> type:
    """[thresholds]: the diagnosis and window thresholds, by their own names and defaults."""
    fields = []
    for src in (DiagnosisThresholds, Thresholds):
        for f in dataclasses.fields(src):
            kind = float if f.type in (float, "float") else int
            fields.append((f.name, kind, key(_THRESHOLD_HELP.get(f.name, "diagnosis threshold (see README)"),
                                             minimum=0, default=f.default)))
    return dataclasses.make_dataclass("ThresholdsSection", fields)


ThresholdsSection = _threshold_section()


def _kafka_section() -> type:
    from ..sinks.kafka.settings import KafkaSettings
    return KafkaSettings


# TOML table name -> its dataclass (a factory, so the Kafka settings load lazily)
SECTIONS = {
    "agent": lambda: AgentSection,
    "filters": lambda: FiltersSection,
    "thresholds": lambda: ThresholdsSection,
    "kafka": _kafka_section,
}


@dataclass
class Config:
    agent: AgentSection
    filters: FiltersSection
    thresholds: object
    kafka: object
    source: dict = field(default_factory=dict)  # "section.key" -> where its value came from

    def diagnosis_thresholds(self) -> DiagnosisThresholds:
        names = {f.name for f in dataclasses.fields(DiagnosisThresholds)}
        return DiagnosisThresholds(**{n: getattr(self.thresholds, n) for n in names})

    def window_thresholds(self) -> Thresholds:
        return Thresholds(short_lifetime_us=self.thresholds.short_lifetime_us)
