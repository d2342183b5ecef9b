"""The agent's health in one snapshot: for `agent` status records and Prometheus alike."""

from __future__ import annotations

from collections import Counter

from ..metrics.selfstats import CpuMeter, cpu_seconds, rss_bytes


class StatusBoard:
    """Reads the pipeline's and the sink's counters; `record_fields` adds rates since the last call."""

    def __init__(self, pipeline, hooks: dict, now: float):
        self.pipe = pipeline
        self.hooks = {k: v.get("method") for k, v in hooks.items()}
        self._last_t = now
        self._last_records: Counter = Counter()
        self._cpu = CpuMeter(now)

    def snapshot(self) -> dict:
        """Totals since start. Safe to call from any thread (reads only)."""
        pipe = self.pipe
        sink = pipe.emitter.sink
        stats = sink.stats() if hasattr(sink, "stats") else {}
        by_reason = {("kernel", r): n for r, n in pipe.stats.kernel_lost.items()}
        by_reason[("queue", "queue_full")] = pipe.stats.queue_lost
        for reason, n in pipe.stats.sink_lost.items():
            by_reason[("sink", reason)] = n
        return {
            "records": pipe.emitter.counts(),
            "lost": {"kernel": sum(pipe.stats.kernel_lost.values()), "queue": pipe.stats.queue_lost,
                     "sink": sum(pipe.stats.sink_lost.values())},
            "lost_by_reason": by_reason,
            "queue_depth": pipe.queue_depth,
            "sink": stats,
            "cpu_seconds": round(cpu_seconds(), 3),
            "rss_bytes": rss_bytes(),
            "sampling": {"keep_one_in": pipe.policy.keep_one_in, "sampled_out": pipe.sampled_out},
            "hooks": self.hooks,
        }

    def record_fields(self, now: float) -> dict:
        """Fields of a status record: the snapshot plus per-second rates over the last interval."""
        snap = self.snapshot()
        elapsed = max(now - self._last_t, 1e-6)
        records = Counter(snap["records"])
        rates = {t: round((records[t] - self._last_records[t]) / elapsed, 2) for t in records}
        cpu_share = self._cpu.share(now)
        self._last_t, self._last_records = now, records
        snap.pop("lost_by_reason")
        snap.pop("hooks")
        return {**snap, "records_per_s": rates, "cpu_share": round(cpu_share, 4), "interval_s": round(elapsed, 3)}
