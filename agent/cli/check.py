"""`connscope check`: is this host ready? Host items, each hook's choice, the sink.

Takes the same configuration as `run`, so it validates the file too. Exits
1 with the fix when something required is missing, 0 otherwise.
"""

from __future__ import annotations

import click

from ..errors import ConnscopeError
from .config_flags import config_options

_FMT = "{:<18} {:<14} {:<8} {}"


class CheckFailed(ConnscopeError):
    pass


@click.command()
@config_options
def check(load_config) -> None:
    """Check the host, load and attach every hook once, and test the sink.

    Exits non-zero when something required (privileges, tracefs, headers, a
    required hook, or with strict any hook) is missing.
    """
    from ..kernel.hostcheck import host_items

    cfg = load_config()
    failed = []
    click.echo(_FMT.format("HOST", "", "STATE", "DETAIL"))
    for item in host_items():
        state = "ok" if item.ok else ("missing" if item.required else "degraded")
        click.echo(_FMT.format(item.name, "", state, item.detail))
        if not item.ok:
            click.echo(_FMT.format("", "", "", f"  fix: {item.fix}"))
            if item.required:
                failed.append(item)
    if failed:
        raise CheckFailed(f"{len(failed)} required item(s) missing: {', '.join(i.name for i in failed)}",
                          failed[0].fix)
    _hooks(cfg)
    _sink(cfg)


def _hooks(cfg) -> None:
    from .. import build

    tracer = build.tracer(cfg, build.service_mode(cfg))
    try:
        click.echo()
        click.echo(_FMT.format("HOOK", "METHOD", "STATE", "DETAIL"))
        for name, st in tracer.statuses.items():
            detail = st.method.target if st.method else f"{st.hook.effect_if_missing}"
            click.echo(_FMT.format(name, st.method.name if st.method else "-", st.state, detail))
            for method, why in st.tried:
                click.echo(_FMT.format("", "", "", f"  not {method}: {why}"))
        click.echo(_FMT.format("READER", tracer.reader["method"], "ok", tracer.reader["why"]))
    finally:
        tracer.close()


def _sink(cfg) -> None:
    click.echo()
    from ..service.assemble import spool_dir
    from ..sinks.kafka.waiting import describe

    left = describe(spool_dir(cfg))
    if left:  # whatever the output: records a Kafka run left behind
        click.echo(_FMT.format("SPOOL", "kafka", "waiting", left))
    if cfg.agent.output != "kafka":
        click.echo(_FMT.format("SINK", "stdout", "ok", "JSON lines on standard output"))
        return
    from ..sinks.kafka import probe

    ok, message = probe(cfg.kafka, timeout=5.0)
    click.echo(_FMT.format("SINK", "kafka", "ok" if ok else "down", message))
    if not ok:
        # the agent itself keeps tracing and spools; for a host check this is a failure to fix
        raise CheckFailed(message)
