"""`connscope check`: compile, load, attach, report each hook, exit."""

from __future__ import annotations

import click

from .options import load_options, tracer_options

_FMT = "{:<18} {:<10} {:<8} {}"


@click.command()
@tracer_options
def check(**tracer_kw) -> None:
    """Load everything once and print which method each hook uses.

    Exits non-zero when a required hook (or, with --strict, any hook)
    cannot attach.
    """
    from ..kernel.loader import Tracer

    tracer = Tracer(load_options(**tracer_kw))
    try:
        click.echo(_FMT.format("HOOK", "METHOD", "STATE", "DETAIL"))
        for name, st in tracer.statuses.items():
            detail = st.method.target if st.method else f"{st.hook.effect_if_missing}"
            click.echo(_FMT.format(name, st.method.name if st.method else "-", st.state, detail))
            for method, why in st.tried:
                click.echo(_FMT.format("", "", "", f"  not {method}: {why}"))
    finally:
        tracer.close()
