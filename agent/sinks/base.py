"""The sink interface: records in, bytes out somewhere."""

from __future__ import annotations

from typing import Protocol


class SinkClosed(Exception):
    """The reader went away (stdout closed): stop emitting, it is not an error."""


class Sink(Protocol):
    def write(self, record: dict) -> None:
        """Accepts one record (schema v1). May buffer."""

    def flush(self) -> None:
        """Hands buffered records on; called after each batch."""

    def close(self) -> None:
        """Flushes and releases resources."""


class LossReportingSink(Sink, Protocol):
    """A sink that can drop records (Kafka with a full spool) also has
    take_losses(); the pipeline's writer calls it after each flush and emits a
    `lost` record (stage "sink") per entry. Such a sink must accept those
    `lost` records even while it drops others, so the report is delivered."""

    def take_losses(self) -> list[tuple[int, str, int | None, int | None]]:
        """(count, reason, first seq, last seq) of the records dropped since the last call."""


def write_out(stream, data) -> None:
    """Writes and flushes; a reader that went away becomes SinkClosed."""
    try:
        stream.write(data)
        stream.flush()
    except (BrokenPipeError, ValueError) as err:  # reader gone / stream closed
        raise SinkClosed(str(err)) from err
