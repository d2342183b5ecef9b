"""Connection metrics for Prometheus, counted from each window's result.

The summaries and these counters come from the same WindowResult (the
kernel's counts), so a Prometheus `increase()` over a window equals what
that window's summaries say. Counters only grow: each window's counts are
added to the series of its (process, destination), never replaced.

Cardinality is bounded twice:
- per process, the first `top_destinations` destinations it is seen with
  (the busiest first within a window) keep their own series; later ones
  are summed into destination="other";
- per metric, at most `max_series` series; a row that would make a new
  one past that is summed into the series whose process and destination
  labels are all "other".
Both folds are counted in connscope_metrics_folded_rows_total{metric, reason},
one per window row that went to an `other` series instead of its own.

A process is its command name, systemd unit and container (not its pid:
pids churn, a service's series must not), so a pre-fork server's workers
are one process here.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from ..aggregate.window import DestStats, WindowResult
from ..decode.text import endpoint_text

# Upper bounds of the connect-latency histogram, in seconds (Prometheus base
# unit). A bin of the kernel's latency sketch goes to the first bucket its
# value (within the sketch's 1% relative accuracy) fits.
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0)
OTHER = "other"
TIME_WAIT_KEEP_NS = 60 * 1_000_000_000  # a TIME_WAIT socket lives 60 s: so does a gauge nobody updated

PROC_LABELS = ("comm", "unit", "container")
DEST_LABELS = ("destination", "direction")

# name -> (type, help, extra labels after the process and destination ones)
FAMILIES = {
    "connscope_connects": ("counter", "Outbound connection attempts by result (ok or the errno name)", ("result",)),
    "connscope_accepts": ("counter", "Inbound connections accepted on a listening port", ()),
    "connscope_closes": ("counter", "Established connections that ended", ()),
    "connscope_active_closes": ("counter", "Connections this side closed first (each leaves a TIME_WAIT socket)",
                                ()),
    "connscope_retransmits": ("counter", "Segments retransmitted on established connections", ()),
    "connscope_syn_retransmits": ("counter", "SYN retransmits of outbound attempts", ()),
    "connscope_resets": ("counter", "RST segments, by side (sent or received)", ("side",)),
    "connscope_diagnoses": ("counter", "Diagnoses raised, by kind", ("kind",)),
    "connscope_time_wait_sockets": ("gauge", "TIME_WAIT sockets to this destination in the process's network "
                                    "namespace at the end of the last window it was active in", ()),
    "connscope_connect_duration_seconds": ("histogram", "Handshake time of successful outbound connects", ()),
}


def proc_labels(names: dict, comm: str) -> tuple[str, str, str]:
    container = names.get("container_id") or ""
    return comm, names.get("unit") or "", container[:12]


def dest_label(dkey: tuple) -> str:
    daddr, dport, _direction = dkey
    return endpoint_text(daddr, dport)


class ConnectionMetrics:
    """Cumulative series, updated at each window's end (`add_window`, the
    reader thread) and read whole at each scrape (`families`, the HTTP thread)."""

    def __init__(self, top_destinations: int = 10, max_series: int = 5000):
        self.top_destinations = top_destinations
        self.max_series = max_series
        self._lock = threading.Lock()
        self._series: dict[str, dict[tuple, float]] = {name: {} for name in FAMILIES}
        self._hist: dict[tuple, list] = {}  # labels -> [count per bucket..., +Inf count, sum]
        self._tw_seen: dict[tuple, int] = {}  # time-wait labels -> window end ns it was last set
        self._dests: dict[tuple, set] = defaultdict(set)  # process labels -> destinations with own series
        self.folded: dict[tuple[str, str], int] = defaultdict(int)  # (metric, reason) -> rows
        self.windows = 0

    # --- updates ----------------------------------------------------------------
    def add_window(self, w: WindowResult, usage: dict | None, findings: list) -> None:
        with self._lock:
            # busiest first across the window, so that among the processes
            # (pids) of one command the busiest destinations get the series
            rows = [(pkey, p, dkey, d) for pkey, p in w.procs.items() for dkey, d in p.dests.items()]
            rows.sort(key=lambda r: (-r[3].new_connections, -r[3].connects_failed))
            for pkey, p, dkey, d in rows:
                proc = proc_labels(p.names, pkey[1])
                dest = self._dest(proc, dkey)
                self._add_dest(proc, dest, dkey, d)
                u = usage.get((pkey, dkey)) if usage else None
                if u is not None:
                    self._set_gauge("connscope_time_wait_sockets", proc + dest, u["time_wait"], w.end_ns)
            for f in findings:
                if f.state != "raised":
                    continue
                names = f.names or (w.procs[f.proc].names if f.proc in w.procs else {})
                proc = proc_labels(names, f.proc[1])
                self._inc("connscope_diagnoses", proc + self._dest(proc, f.dest), (f.kind,), 1)
            self._expire_gauges(w.end_ns)
            self.windows += 1

    def _dest(self, proc: tuple, dkey: tuple) -> tuple[str, str]:
        daddr, _dport, direction = dkey
        if daddr is None:  # a process-wide finding
            return "", direction or ""
        label = dest_label(dkey)
        own = self._dests[proc]
        if label in own:
            return label, direction
        if len(own) < self.top_destinations:
            own.add(label)
            return label, direction
        return OTHER, direction

    def _add_dest(self, proc: tuple, dest: tuple, dkey: tuple, d: DestStats) -> None:
        labels = proc + dest
        if d.connects_ok:
            self._inc("connscope_connects", labels, ("ok",), d.connects_ok)
        for err, n in d.failures.items():
            self._inc("connscope_connects", labels, (err,), n)
        for name, n in (("connscope_accepts", d.accepts), ("connscope_closes", d.closes),
                        ("connscope_active_closes", d.active_closes), ("connscope_retransmits", d.retransmits),
                        ("connscope_syn_retransmits", d.syn_retransmits)):
            if n:
                self._inc(name, labels, (), n)
        if d.resets_sent:
            self._inc("connscope_resets", labels, ("sent",), d.resets_sent)
        if d.resets_received:
            self._inc("connscope_resets", labels, ("received",), d.resets_received)
        if d.latency.count:
            self._observe(labels, d.latency)

    def _admit(self, metric: str, labels: tuple, table: dict) -> tuple:
        """labels, or the `other` series when the metric is at max_series."""
        if labels in table or len(table) < self.max_series:
            if labels[3] == OTHER:
                self.folded[(metric, "top_destinations")] += 1
            return labels
        self.folded[(metric, "max_series")] += 1
        n = len(PROC_LABELS) + 1  # process labels and destination
        return (OTHER,) * n + labels[n:]

    def _inc(self, metric: str, labels: tuple, extra: tuple, n: float) -> None:
        table = self._series[metric]
        key = self._admit(metric, labels + extra, table)
        table[key] = table.get(key, 0) + n

    def _set_gauge(self, metric: str, labels: tuple, value: float, now_ns: int) -> None:
        table = self._series[metric]
        key = self._admit(metric, labels, table)
        table[key] = value
        self._tw_seen[key] = now_ns

    def _expire_gauges(self, now_ns: int) -> None:
        table = self._series["connscope_time_wait_sockets"]
        for key, seen in list(self._tw_seen.items()):
            if now_ns - seen > TIME_WAIT_KEEP_NS:
                del self._tw_seen[key]
                table.pop(key, None)

    def _observe(self, labels: tuple, sketch) -> None:
        metric = "connscope_connect_duration_seconds"
        key = self._admit(metric, labels, self._hist)
        h = self._hist.get(key)
        if h is None:
            h = self._hist[key] = [0] * (len(LATENCY_BUCKETS_S) + 2)
        mapping, store = sketch._mapping, sketch._store
        for i, n in enumerate(store.bins):
            if not n:
                continue
            seconds = mapping.value(i + store.offset) / 1e6  # the kernel bins microseconds
            h[_bucket(seconds)] += n
            h[-1] += seconds * n

    # --- the scrape ---------------------------------------------------------------
    def families(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            for name, (kind, help_text, extra) in FAMILIES.items():
                labels = [*PROC_LABELS, *DEST_LABELS, *extra]
                if kind == "histogram":
                    fam = HistogramMetricFamily(name, help_text, labels=labels)
                    for key, h in sorted(self._hist.items()):
                        fam.add_metric(list(key), _cumulative(h), h[-1])
                elif kind == "gauge":
                    fam = GaugeMetricFamily(name, help_text, labels=labels)
                else:
                    fam = CounterMetricFamily(name, help_text, labels=labels)
                if kind != "histogram":
                    for key, value in sorted(self._series[name].items()):
                        fam.add_metric(list(key), value)
                yield fam
            folded = CounterMetricFamily(
                "connscope_metrics_folded_rows", "Window rows summed into an `other` series: beyond a process's "
                "top destinations, or past the series limit of a metric", labels=["metric", "reason"])
            for (metric, reason), n in sorted(self.folded.items()):
                folded.add_metric([metric, reason], n)
            yield folded
            yield CounterMetricFamily("connscope_metrics_windows", "Windows counted into the connection metrics",
                                      value=self.windows)


def _bucket(seconds: float) -> int:
    for i, bound in enumerate(LATENCY_BUCKETS_S):
        if seconds <= bound:
            return i
    return len(LATENCY_BUCKETS_S)  # +Inf only


def _cumulative(h: list) -> list[tuple[str, float]]:
    out, total = [], 0
    for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), h[:-1]):
        total += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return out
