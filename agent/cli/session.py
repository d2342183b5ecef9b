"""Running the agent the same way for every hand-run command: load, seed, run, stop."""

from __future__ import annotations

import signal

from .. import build
from ..config.model import Config


def run_session(cfg: Config, sink, mode: build.Mode, duration: float | None,
                start_extra: dict | None = None) -> None:
    from ..kernel.listeners import current_listeners

    tracer = build.tracer(cfg, mode)
    try:
        seeded = tracer.seed_listeners(current_listeners())
        pipe = build.pipeline(cfg, tracer, sink, mode)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: pipe.stop.set())
        pipe.run(duration, start_fields=build.start_fields(tracer, seeded, **(start_extra or {})))
    finally:
        tracer.close()
