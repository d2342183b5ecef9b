"""`connscope run`: the long-lived agent, as systemd runs it.

One loop (the pipeline's writer thread) does everything periodic through
`tick`: systemd READY once attached, WATCHDOG pings (so a stuck loop gets
the service restarted), `agent` status records, overload sampling and
SIGHUP reloads. Signal handlers only set flags.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Callable

from ..config.model import Config
from ..errors import ConnscopeError
from . import reload as reloading
from .. import build
from .assemble import announce_sink, open_sink
from .notify import Notifier, WatchdogPinger
from .overload import OverloadControl
from .status import StatusBoard


class Daemon:
    def __init__(self, load_config: Callable[[], Config], cfg: Config, duration: float | None = None):
        self.load_config = load_config  # re-reads file + environment + the same flags
        self.cfg = cfg
        self.duration = duration
        self.notifier = Notifier()
        self.pinger = WatchdogPinger(self.notifier)
        self.status_interval = cfg.agent.status_interval
        self._reload_wanted = False
        self._ready_sent = False
        self._next_trouble_check = 0.0
        self._trouble_shown = False
        self.pipe = self.overload = self.board = None

    def run(self) -> None:
        import faulthandler

        from ..kernel.listeners import current_listeners
        # The watchdog kills a stuck agent with SIGABRT: leave every thread's
        # stack in the journal, so the hang can be found.
        faulthandler.enable()

        cfg = self.cfg
        self.notifier.status("loading BPF programs")
        mode = build.service_mode(cfg)
        tracer = build.tracer(cfg, mode)
        sink = metrics = None
        try:
            # off the start path: a slow or black-holed broker must not delay attaching
            threading.Thread(target=announce_sink, args=(cfg, _warn), name="connscope-probe", daemon=True).start()
            sink = open_sink(cfg)
            seeded = tracer.seed_listeners(current_listeners())
            self.pipe = pipe = build.pipeline(cfg, tracer, sink, mode)
            now = time.monotonic()
            self.board = StatusBoard(pipe, tracer.hook_choices(), now)
            self.overload = OverloadControl(pipe, cfg.agent.cpu_budget, now)
            self._next_status = now + self.status_interval if self.status_interval else None
            if cfg.agent.prometheus:
                from ..metrics.connections import ConnectionMetrics
                from ..metrics.prometheus import MetricsServer
                connections = ConnectionMetrics(cfg.agent.prometheus_destinations, cfg.agent.prometheus_series)
                pipe.on_window = connections.add_window
                metrics = MetricsServer(cfg.agent.prometheus, self.board.snapshot, connections)
            self._install_signals()
            pipe.run(self.duration, tick=self.tick, start_fields=build.start_fields(
                tracer, seeded, mode="service", connections=cfg.agent.connections, output=cfg.agent.output,
                filters=build.filters_field(cfg), config_sources=cfg.source))
        finally:
            self.notifier.stopping()
            if self.pipe is not None:
                sink = self.pipe.emitter.sink  # a reload may have replaced it
            if sink is not None:
                sink.close()
                _report_undelivered(sink, self.pipe)
            if metrics is not None:
                metrics.close()
            tracer.close()

    def _install_signals(self) -> None:
        def stop(*_):
            self.pipe.stop.set()

        def hup(*_):
            self._reload_wanted = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    # --- the writer thread's periodic work ---------------------------------
    def tick(self, now: float) -> None:
        emit = self.pipe.emitter.emit
        if not self._ready_sent:
            self._ready_sent = True
            self.notifier.ready(f"tracing; output={self.cfg.agent.output}")
        self.pinger.tick(now)
        if self._reload_wanted:
            self._reload_wanted = False
            self._reload(emit)
        change = self.overload.tick(now)
        if change is not None:
            emit(self.pipe.builder.agent_record("sampling", **change))
        if self._next_status is not None and now >= self._next_status:
            fields = self.board.record_fields(now)
            emit(self.pipe.builder.agent_record("status", **fields))
            self.notifier.status(_status_line(fields))
            self._next_status = now + self.status_interval if self.status_interval else None
        elif self._next_status is None and self.status_interval:
            self._next_status = now + self.status_interval
        if now >= self._next_trouble_check:
            self._next_trouble_check = now + TROUBLE_CHECK_S
            self._show_trouble()

    def _show_trouble(self) -> None:
        """`systemctl status` says at once when delivery starts or stops failing,
        not only at the next status interval."""
        sink = self.pipe.emitter.sink
        delivery = getattr(sink, "delivery", None)
        line = delivery.health_line() if delivery is not None else None
        if line is not None:
            self.notifier.status(line)
        elif self._trouble_shown:
            self.notifier.status("tracing; delivery works again")
        self._trouble_shown = line is not None

    def _reload(self, emit) -> None:
        self.notifier.reloading()
        try:
            new = self.load_config()
            fields = reloading.apply(self, self.cfg, new)
            self.cfg = reloading.running(self.cfg, new)
        except Exception as err:  # a reload never stops the agent
            line = err.one_line() if isinstance(err, ConnscopeError) else f"connscope: reload failed: {err!r}"
            print(f"{line} (configuration not reloaded; the agent keeps the old one)", file=sys.stderr, flush=True)
            fields = {"error": line, "applied": [], "restart_required": []}
        emit(self.pipe.builder.agent_record("reload", **fields))
        self.notifier.ready("configuration reloaded")


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


TROUBLE_CHECK_S = 2.0


def _status_line(f: dict) -> str:
    rate = sum(f["records_per_s"].values())
    lost = sum(f["lost"].values())
    line = (f"{rate:.0f} records/s, lost {lost}, queue {f['queue_depth']}, "
            f"cpu {f['cpu_share'] * 100:.0f}%, rss {f['rss_bytes'] >> 20} MiB, keep 1/{f['sampling']['keep_one_in']}")
    trouble = f.get("sink", {}).get("trouble")
    return f"{trouble}; {line}" if trouble else line


def _report_undelivered(sink, pipe) -> None:
    """The stop record goes to stderr too when the sink kept records back:
    whoever watches the journal still sees how the run ended."""
    undelivered = getattr(sink, "undelivered", None)
    stop = getattr(pipe, "stop_record", None) if pipe is not None else None
    if undelivered is None or stop is None or not undelivered():
        return
    import orjson

    _warn("connscope: kafka: not everything was delivered before the stop; the rest stays in the spool for "
          "the next start. The stop record: " + orjson.dumps(stop).decode())
