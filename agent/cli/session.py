"""Starting the agent the same way for every command: load, seed, run, stop."""

from __future__ import annotations

import signal

from ..records.build import RecordBuilder
from ..service.assemble import start_fields
from .options import load_options


def run_session(tracer_kw: dict, sink, duration: float | None, start_extra: dict | None = None, **pipeline_kw) -> None:
    from ..kernel.listeners import current_listeners
    from ..kernel.loader import Tracer
    from ..pipeline import Pipeline

    opts = load_options(**tracer_kw)
    opts.aggregate = pipeline_kw.get("aggregator") is not None  # summaries read the kernel's counts
    tracer = Tracer(opts)
    try:
        seeded = tracer.seed_listeners(current_listeners())
        pipe = Pipeline(tracer, RecordBuilder(), sink, **pipeline_kw)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: pipe.stop.set())
        pipe.run(duration, start_fields=start_fields(tracer, seeded, **(start_extra or {})))
    finally:
        tracer.close()
