"""The delivery's bookkeeping types: spool sources and their replay batches,
flights (records handed to the producer together) and the counters."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..spool import Cursor, Spool


@dataclass(eq=False)
class Batch:
    cursor: Cursor  # the spool position after this batch
    outstanding: int  # records not yet acknowledged (or refused)
    failed: bool = False


@dataclass(eq=False)
class Source:
    name: str
    spool: Spool
    ahead: Cursor  # next record to hand over
    unread: bool = True  # records may exist past `ahead` (unknown at start)
    failed: bool = False  # a record handed from here failed: rewind once all are settled
    batches: deque = field(default_factory=deque)


@dataclass(eq=False)
class Flight:
    """Records handed to the producer in one go, from one source, in order."""

    futures: list  # kafka-python's futures, in hand-over order
    values: list[bytes]
    size: int  # bytes (values and keys), released when the whole flight settles
    src: Source | None = None  # None: fresh records (from memory)
    batch: Batch | None = None  # the spool batch a replay flight belongs to
    settled: int = 0  # futures read so far, from the front
    failed: list = field(default_factory=list)  # indexes of those that failed


@dataclass
class Counters:
    handed: int = 0  # records given to the producer (replays and resends included)
    acked: int = 0  # acknowledged by the brokers
    failed: int = 0  # failed deliveries; each record went back to a spool (not lost)
    spooled: int = 0  # records written to a spool
    replayed: int = 0  # records acknowledged after a stay in a spool
    dropped: int = 0  # records dropped: the spool was full
    rejected: int = 0  # records the brokers refused for good (e.g. too large): dropped
    corrupt_skipped: int = 0  # damaged spool regions skipped
    producers_replaced: int = 0  # producers that stopped resolving records (see _replace_if_wedged)
