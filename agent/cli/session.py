"""Starting the agent the same way for every command: load, seed, run, stop."""

from __future__ import annotations

import os
import platform
import signal

from .. import __version__
from ..records.build import RecordBuilder
from .options import load_options


def run_session(tracer_kw: dict, sink, duration: float | None, start_extra: dict | None = None, **pipeline_kw) -> None:
    from ..kernel.listeners import current_listeners
    from ..kernel.loader import Tracer
    from ..pipeline import Pipeline

    opts = load_options(**tracer_kw)
    opts.proc_counts = pipeline_kw.get("aggregator") is not None  # summaries read them
    tracer = Tracer(opts)
    try:
        seeded = tracer.seed_listeners(current_listeners())
        pipe = Pipeline(tracer, RecordBuilder(), sink, **pipeline_kw)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: pipe.stop.set())
        hooks = tracer.hook_choices()
        pipe.run(duration, start_fields={
            "version": __version__,
            "kernel": platform.release(),
            "hooks": hooks,
            "hooks_summary": ", ".join(f"{k}={v['method'] or 'missing'}" for k, v in hooks.items()),
            "listeners_seeded": seeded,
            "agent_pid": os.getpid(),
            **(start_extra or {}),
        })
    finally:
        tracer.close()
