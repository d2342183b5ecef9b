"""An on-disk spool: what a sink could not deliver yet, kept in order.

Append-only segment files of frames `magic u32 | length u32 | crc32 u32 |
payload`. The spool never writes into an existing segment after it is
reopened, so a frame torn by a crash can only be a segment's last one; a
frame whose magic, length or checksum is wrong ends the reading of its
segment (counted in `corrupt`, never fatal) and reading goes on with the
next segment. The read position (segment, offset) is saved by atomic
rename after each commit, so a restart replays exactly what was not
committed. Bounded in bytes: `append` refuses when full and the caller
counts the record as lost; `over` lets a few small records (the report of
that loss) past the bound. `read` may start at a cursor ahead of the
commit point, so a sender can read ahead while earlier reads await their
acknowledgement.

Single writer and single reader in one process (the sink's thread).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

MAGIC = 0x31505343  # "CSP1"
_HEAD = struct.Struct("<III")
MAX_FRAME = 16 << 20


@dataclass(frozen=True)
class Cursor:
    segment: int
    offset: int


class Spool:
    def __init__(self, path: str, max_bytes: int, segment_bytes: int = 8 << 20):
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.corrupt = 0  # frames (or torn tails) skipped
        os.makedirs(path, exist_ok=True)
        self._segments = sorted(self._list())
        self._read = self._load_cursor()
        self._size = sum(os.path.getsize(self._seg_path(s)) for s in self._segments)
        self._size -= self._read.offset if self._read.segment in self._segments else 0
        # always a fresh segment for writing (never append after a torn tail),
        # and never behind the read position
        self._write_seg = max((self._segments[-1] + 1) if self._segments else 1, self._read.segment)
        self._corrupt_seen: set[tuple[int, int]] = set()
        self._writer = None
        self._write_off = 0

    # --- files ---------------------------------------------------------------
    def _list(self):
        for name in os.listdir(self.path):
            if name.startswith("seg-") and name.endswith(".log"):
                yield int(name[4:-4])

    def _seg_path(self, seg: int) -> str:
        return os.path.join(self.path, f"seg-{seg:012d}.log")

    def _cursor_path(self) -> str:
        return os.path.join(self.path, "cursor")

    def _load_cursor(self) -> Cursor:
        try:
            with open(self._cursor_path()) as f:
                seg, off = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            seg, off = (self._segments[0] if self._segments else 1), 0
        if self._segments and seg < self._segments[0]:
            seg, off = self._segments[0], 0
        return Cursor(seg, off)

    def _save_cursor(self, c: Cursor) -> None:
        tmp = self._cursor_path() + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{c.segment} {c.offset}\n")
        os.replace(tmp, self._cursor_path())

    # --- writing -------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes not yet committed (frame headers included)."""
        return self._size

    def append(self, payload: bytes, over: int = 0) -> bool:
        """Adds one payload; False (nothing written) when the spool is full.

        `over`: bytes this payload may go past max_bytes (a reserve for
        records that must not be dropped)."""
        return self.append_many([payload], over) == 1

    def append_many(self, payloads: list[bytes], over: int = 0) -> int:
        """Adds payloads in order until one does not fit; returns how many were added."""
        done = 0
        chunk: list[bytes] = []
        for payload in payloads:
            frame_len = _HEAD.size + len(payload)
            if self._size + frame_len > self.max_bytes + over or len(payload) > MAX_FRAME:
                break
            if self._writer is None or self._write_off + frame_len > self.segment_bytes and self._write_off:
                self._write(chunk)
                chunk = []
                self._roll()
            chunk.append(_HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)))
            chunk.append(payload)
            self._write_off += frame_len
            self._size += frame_len
            done += 1
        self._write(chunk)
        return done

    def _write(self, chunk: list[bytes]) -> None:
        if chunk:
            self._writer.write(b"".join(chunk))
            self._writer.flush()  # in the page cache: survives the process being killed

    def _roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._write_seg += 1
        self._writer = open(self._seg_path(self._write_seg), "ab")
        self._write_off = 0
        if self._write_seg not in self._segments:
            self._segments.append(self._write_seg)

    def sync(self) -> None:
        """fsync: survive a power loss too (costly; call per batch, not per record)."""
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())

    # --- reading -------------------------------------------------------------
    @property
    def committed(self) -> Cursor:
        """The read position: everything before it is delivered."""
        return self._read

    def read(self, max_items: int, start: Cursor | None = None) -> tuple[list[bytes], Cursor]:
        """Up to max_items payloads from `start` (default: the read position),
        and the cursor after them; nothing is consumed until commit(cursor)."""
        out: list[bytes] = []
        cur = self._read if start is None else start
        while len(out) < max_items:
            seg = next((s for s in self._segments if s >= cur.segment), None)
            if seg is None:
                break
            if seg != cur.segment:
                cur = Cursor(seg, 0)
            items, off, done = self._read_segment(seg, cur.offset, max_items - len(out))
            out += items
            cur = Cursor(seg, off)
            if not done:
                break  # max_items reached within the segment
            if seg == self._write_seg and self._writer is not None:
                break  # the live segment: nothing more yet
            cur = Cursor(seg + 1, 0)
        return out, cur

    def _read_segment(self, seg: int, offset: int, max_items: int) -> tuple[list[bytes], int, bool]:
        """-> (payloads, offset after them, reached the end of the segment)."""
        items = []
        try:
            f = open(self._seg_path(seg), "rb")
        except FileNotFoundError:
            return items, offset, True
        with f:
            f.seek(offset)
            while len(items) < max_items:
                head = f.read(_HEAD.size)
                if not head:
                    return items, offset, True
                ok = len(head) == _HEAD.size
                if ok:
                    magic, n, crc = _HEAD.unpack(head)
                    ok = magic == MAGIC and n <= MAX_FRAME
                if ok:
                    payload = f.read(n)
                    ok = len(payload) == n and zlib.crc32(payload) == crc
                if not ok:
                    live = seg == self._write_seg and self._writer is not None
                    if live:  # our own unflushed tail cannot be torn: stop here
                        return items, offset, True
                    if (seg, offset) not in self._corrupt_seen:  # count once, however often re-read
                        self._corrupt_seen.add((seg, offset))
                        self.corrupt += 1
                    # torn or corrupt: skip the rest of this segment
                    return items, os.path.getsize(self._seg_path(seg)), True
                items.append(payload)
                offset += _HEAD.size + n
        return items, offset, False

    def commit(self, cur: Cursor) -> None:
        """Marks everything before cur as delivered; deletes finished segments."""
        consumed = 0
        for seg in list(self._segments):
            if seg > cur.segment:
                break
            start = self._read.offset if seg == self._read.segment else 0
            if seg < cur.segment:
                live = seg == self._write_seg and self._writer is not None
                size = os.path.getsize(self._seg_path(seg)) if os.path.exists(self._seg_path(seg)) else start
                consumed += max(0, size - start)
                if not live:
                    os.unlink(self._seg_path(seg))
                    self._segments.remove(seg)
            else:
                consumed += max(0, cur.offset - start)
        self._size = max(0, self._size - consumed)
        self._read = cur
        self._save_cursor(cur)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
