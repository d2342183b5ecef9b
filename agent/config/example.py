"""Writes the example configuration: every key, its default and its documentation.

`python -m agent.config.example > etc/connscope.toml.example`; a test checks
that the shipped file is exactly this output, so it never drifts from the model.
"""

from __future__ import annotations

import dataclasses
import textwrap

from .load import env_name, needs_restart, section_fields
from .model import SECTIONS

_INTRO = """\
# connscope configuration (TOML). Default path: /etc/connscope/connscope.toml
# Every key is shown with its default, commented out. Precedence: this file,
# then CONNSCOPE_<TABLE>_<KEY> environment variables, then `connscope run` flags.
# An unknown key or a bad value stops the agent with one line naming it (exit 2).
# SIGHUP (systemctl reload connscope) re-reads this file; keys marked
# "restart" need a restart to take effect.
"""


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if value is None:
        return '""'
    return repr(value)


def render() -> str:
    out = [_INTRO]
    for table in SECTIONS:
        out.append(f"\n[{table}]")
        for name, f in section_fields(table).items():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            meta = f.metadata or {}
            note = meta.get("help", "")
            if meta.get("choices"):
                note += f"; one of: {', '.join(map(str, meta['choices']))}"
            if needs_restart(f):
                note += " (restart)"
            out.extend(textwrap.wrap(f"{note}. Env: {env_name(table, name)}", 96,
                                     initial_indent="# ", subsequent_indent="#   "))
            out.append(f"# {name} = {_toml(default)}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
