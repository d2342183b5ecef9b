"""An optional Prometheus endpoint: the `agent` status record's counters and the connection metrics.

Uses prometheus_client's own HTTP server and a custom collector that reads a
snapshot function at scrape time, so the exported values are exactly the
ones the status record reports and nothing is updated on the hot path.
"""

from __future__ import annotations

import ipaddress
from typing import Callable

from ..errors import UsageError


def parse_listen(text: str, key: str) -> tuple[str, int]:
    """'127.0.0.1:9477' or '[::1]:9477' -> (host, port); UsageError naming `key` otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        num = int(port)
        if not sep or not 1 <= num <= 65535:
            raise ValueError
    except ValueError:
        raise UsageError(f"{key} = {text!r} is not HOST:PORT with an IP address",
                         "use e.g. 127.0.0.1:9477 or [::1]:9477") from None
    if not ip.is_loopback:
        raise UsageError(f"{key} = {text!r} is not a loopback address",
                         "serve metrics on 127.0.0.1 or ::1 and let the local scraper reach them")
    return host, num


def _families(snapshot: dict):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    rec = CounterMetricFamily("connscope_records", "Records written to the sink, by type", labels=["type"])
    for rtype, n in sorted(snapshot["records"].items()):
        rec.add_metric([rtype], n)
    yield rec
    lost = CounterMetricFamily("connscope_lost", "Records (or kernel runs) lost, by stage and reason",
                               labels=["stage", "reason"])
    for (stage, reason), n in sorted(snapshot["lost_by_reason"].items()):
        lost.add_metric([stage, reason], n)
    yield lost
    yield GaugeMetricFamily("connscope_queue_depth", "Events waiting in the user-space queue",
                            value=snapshot["queue_depth"])
    yield CounterMetricFamily("connscope_cpu_seconds", "CPU time used by the agent (user + system)",
                              value=snapshot["cpu_seconds"])
    yield GaugeMetricFamily("connscope_rss_bytes", "Resident memory of the agent", value=snapshot["rss_bytes"])
    yield GaugeMetricFamily("connscope_sampling_keep_one_in",
                            "Per-connection records kept: one in N (1 = all, no overload)",
                            value=snapshot["sampling"]["keep_one_in"])
    yield CounterMetricFamily("connscope_sampled_out", "Per-connection records left out by overload sampling",
                              value=snapshot["sampling"]["sampled_out"])
    sink = GaugeMetricFamily("connscope_sink", "The sink's delivery counters (see README, Kafka)",
                             labels=["counter"])
    for name, n in sorted(snapshot.get("sink", {}).items()):
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            sink.add_metric([name], n)
    yield sink
    hooks = InfoMetricFamily("connscope_hook", "The method each kernel hook uses", labels=["hook"])
    for hook, method in sorted(snapshot["hooks"].items()):
        hooks.add_metric([hook], {"method": method or "missing"})
    yield hooks


class _Collector:
    def __init__(self, snapshot: Callable[[], dict], connections=None):
        self.snapshot = snapshot
        self.connections = connections

    def collect(self):
        yield from _families(self.snapshot())
        if self.connections is not None:
            yield from self.connections.families()


class MetricsServer:
    """Serves /metrics on `listen` from `snapshot()`, and the connection
    metrics (metrics/connections.py) when given; `close()` stops it."""

    def __init__(self, listen: str, snapshot: Callable[[], dict], connections=None):
        from prometheus_client import CollectorRegistry, start_http_server

        host, port = parse_listen(listen, "agent.prometheus")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(snapshot, connections))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise UsageError(f"agent.prometheus: cannot listen on {listen}: {err.strerror}",
                             "pick a free port or set agent.prometheus = \"\" to turn the endpoint off") from None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
