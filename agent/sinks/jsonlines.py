"""JSON lines to a binary stream (stdout by default), through orjson."""

from __future__ import annotations

import sys
from typing import BinaryIO

import orjson

from .base import SinkClosed, write_out


class JsonLinesSink:
    def __init__(self, stream: BinaryIO | None = None):
        self.stream = stream if stream is not None else sys.stdout.buffer
        self._buf: list[bytes] = []

    FLUSH_AT = 2048  # records; a writer that is always behind still writes in bounded chunks

    def write(self, record: dict) -> None:
        self._buf.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if len(self._buf) >= self.FLUSH_AT:
            self.flush()

    def write_encoded(self, lines: list[str], _events=None, _host: str = "") -> None:
        """A batch of records already JSON text (records/encode.py), one per
        line; written at once: a batch is already a bounded chunk. Joined and
        encoded once, the newline written apart: each copy of a batch of
        thousands of records costs as much as the encoding."""
        self.flush()  # dict records written before it go first
        write_out(self.stream, "\n".join(lines).encode())
        write_out(self.stream, b"\n")

    def flush(self) -> None:
        if not self._buf:
            return
        data, self._buf = b"".join(self._buf), []
        write_out(self.stream, data)

    def close(self) -> None:
        try:
            self.flush()
        except SinkClosed:
            pass
