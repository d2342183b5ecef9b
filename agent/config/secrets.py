"""The agent's own secrets (keys marked `secret` in their field metadata) are never printed.

Whatever shows configuration (--print-config, reload and status records,
error lines) goes through redacted().
"""

from __future__ import annotations

import dataclasses

MASK = "********"


def secret_keys(section) -> set[str]:
    return {f.name for f in dataclasses.fields(section) if f.metadata.get("secret")}


def redacted(section) -> dict:
    """The section as a dict, with every secret that is set replaced by MASK."""
    out = dataclasses.asdict(section)
    for name in secret_keys(section):
        if out.get(name):
            out[name] = MASK
    return out
