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


def write_out(stream, data) -> None:
    """Writes and flushes; a reader that went away becomes SinkClosed."""
    try:
        stream.write(data)
        stream.flush()
    except (BrokenPipeError, ValueError) as err:  # reader gone / stream closed
        raise SinkClosed(str(err)) from err
