"""Options shared by commands that load the tracer."""

from __future__ import annotations

import functools

import click

import dataclasses

from ..aggregate.diagnose import DiagnosisThresholds
from ..aggregate.window import Thresholds
from ..kernel.hooks import force_choices, parse_force


def _parse_force(_ctx, _param, values) -> dict[str, str]:
    try:
        return parse_force(values)
    except ValueError as bad:
        raise click.BadParameter(f"{str(bad)!r} is not HOOK=METHOD among: {force_choices()}") from None


def tracer_options(fn):
    @click.option("--force-hook", "force", multiple=True, callback=_parse_force, metavar="HOOK=METHOD",
                  help="Use this method for a hook instead of probing (e.g. event_buffer=perf), "
                       "or leave an optional hook out (nagle=off).")
    @click.option("--strict", is_flag=True, help="Fail when an optional hook cannot attach.")
    @click.option("--buffer-pages", type=click.IntRange(min=1), default=2048, show_default=True,
                  help="Ring buffer size in 4 KiB pages (a power of two).")
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        return fn(*args, **kw)

    return wrapper


def filter_options(fn):
    """--json and the filters `trace` and `sockets` share: --pid, --comm, --port, -4, -6."""
    @click.option("--json", "as_json", is_flag=True, help="JSON lines (the default when stdout is not a terminal).")
    @click.option("--pid", "pids", multiple=True, type=click.IntRange(min=1),
                  help="Only this process id (repeatable).")
    @click.option("--comm", "comms", multiple=True, help="Only this command name, exact (repeatable).")
    @click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535),
                  help="Only connections with this port at either end (repeatable).")
    @click.option("-4", "ipv4", is_flag=True, help="Only IPv4.")
    @click.option("-6", "ipv6", is_flag=True, help="Only IPv6.")
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        if kw["ipv4"] and kw["ipv6"]:
            raise click.UsageError("-4 and -6 exclude each other; for both families give neither")
        return fn(*args, **kw)

    return wrapper


def tracer_values(force: dict[str, str], strict: bool, buffer_pages: int) -> dict[str, tuple[object, str]]:
    """The tracer flags as configuration values (config/load.py, from_values)."""
    if buffer_pages & (buffer_pages - 1):
        raise click.BadParameter(f"{buffer_pages} is not a power of two", param_hint="--buffer-pages")
    return {"agent.force_hooks": ([f"{k}={v}" for k, v in force.items()], "--force-hook"),
            "agent.strict": (strict, "--strict"), "agent.buffer_pages": (buffer_pages, "--buffer-pages")}


def parse_thresholds(_ctx, _param, values) -> dict[str, tuple[object, str]]:
    """NAME=VALUE pairs into configuration values of [thresholds]."""
    diag = {f.name: f.type for f in dataclasses.fields(DiagnosisThresholds)}
    win = {f.name: f.type for f in dataclasses.fields(Thresholds)}
    out = {}
    for v in values:
        name, sep, raw = v.partition("=")
        kind = diag.get(name) or win.get(name)
        if not sep or kind is None:
            raise click.BadParameter(f"{v!r} is not NAME=VALUE with NAME among: {', '.join(sorted(diag | win))}")
        try:
            value = (float if kind in (float, "float") else int)(raw)
        except ValueError:
            raise click.BadParameter(f"{name} takes a number, not {raw!r}") from None
        if value < 0:
            raise click.BadParameter(f"{name} cannot be negative ({raw})")
        out[f"thresholds.{name}"] = (value, "--threshold")
    return out
