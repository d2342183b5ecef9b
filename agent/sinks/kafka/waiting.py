"""What a Kafka spool still holds: records waiting for the next Kafka run.

Read without a sink (after one closed, or from `connscope check`): the two
spools under the spool directory, each from its committed read position.
"""

from __future__ import annotations

import os

from ..spool import Spool

SPOOLS = ("retry", "backlog")  # the sink's two spools (delivery.py)
_READ_BATCH = 4096


def waiting(spool_dir: str) -> tuple[int, int]:
    """(records, bytes) not yet delivered; (0, 0) when there is no spool."""
    records = size = 0
    for name in SPOOLS:
        path = os.path.join(spool_dir, name)
        if not os.path.isdir(path):
            continue
        spool = Spool(path, max_bytes=1 << 62)
        try:
            size += spool.size_bytes
            cur = None
            while True:
                items, cur = spool.read(_READ_BATCH, cur)
                if not items:
                    break
                records += len(items)
        finally:
            spool.close()
    return records, size


def describe(spool_dir: str) -> str | None:
    """One sentence about what waits in the spool, None when nothing does."""
    records, size = waiting(spool_dir)
    if not records:
        return None
    return (f"{records} records ({size / (1 << 20):.1f} MiB) wait in the Kafka spool {spool_dir}; "
            "they are sent at the next run with output = \"kafka\"")
