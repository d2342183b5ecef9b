"""The BPF ring buffer read straight from its mmap'ed pages, a batch at a time.

libbpf's reader calls back once per record; through BCC that is a ctypes
call, a copy and a Python frame per record. This one reads what the kernel
wrote where it lies, walks the headers and advances the consumer position
once per batch.

Layout (kernel/bpf/ringbuf.c, as libbpf's ringbuf.c maps it): offset 0 of
the map fd is one page holding the consumer position (u64, ours to write);
offset PAGE is one page holding the producer position (u64, the kernel's),
followed by the data pages mapped twice in a row, so a record that wraps
around the end reads as one contiguous slice. Each record is an 8-byte
header {u32 len; u32 pg_off} then the data, the whole rounded up to 8
bytes. `len` carries BUSY (bit 31: reserved, not yet committed: stop there)
and DISCARD (bit 30: skip it).

Ordering: libbpf loads the producer position and each header with acquire
semantics and stores the consumer position with release semantics. On
x86-64 (TSO) every plain load and store has those semantics, and plain is
all Python can do, so this reader is used on x86-64 only (`supported()`);
other machines keep libbpf's callback reader.

Tearing: the two positions are read and written through ctypes c_uint64,
one 8-byte access each. struct's "<Q" goes byte by byte: a consumer
position stored that way passes through values below the old one (low bytes
first), and the kernel, reading one of them, finds the ring full and drops
the record (seen in the saturation bench before this was so). A header's
length needs no such care: only its top byte changes (BUSY cleared at
commit), and a record is read after its header.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8
_U32 = struct.Struct("<I")


def supported() -> tuple[bool, str]:
    """Whether plain loads and stores are enough here (see the module doc)."""
    machine = platform.machine()
    if machine in ("x86_64", "AMD64"):
        return True, ""
    return False, f"{machine} is not TSO: plain loads lack the acquire order the ring's headers need"


def _round8(n: int) -> int:
    return (n + 7) & ~7


class RingReader:
    """Batches of fixed-size records from one BPF_MAP_TYPE_RINGBUF map.

    `record` is the struct.Struct of one record (without the header). Records
    of another size are counted in `malformed` and skipped, never decoded.
    """

    def __init__(self, map_fd: int, size: int, record: struct.Struct):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.size = size
        self._mask = size - 1
        self._rec_len = record.size
        self._stride = _round8(HDR + record.size)
        # one stride as one format: the header skipped, the record, the pad to
        # 8 bytes; its length word is checked apart (_plain_run)
        self._body = struct.Struct("<8x" + record.format.lstrip("<@=!>") + f"{self._stride - HDR - record.size}x")
        assert self._body.size == self._stride
        self._plain = _U32.pack(record.size)
        self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map)
        # read-only (the kernel refuses a writable mapping of these pages),
        # which Python's mmap cannot hand to ctypes: mapped through libc
        self._prod_len = page + 2 * size
        self._prod_addr = _mmap_readonly(map_fd, self._prod_len, page)
        self._prod = ctypes.c_uint64.from_address(self._prod_addr)
        self._view = memoryview((ctypes.c_char * self._prod_len).from_address(self._prod_addr)).cast("B")
        self._page = page
        self._epoll = select.epoll()
        # the map fd polls readable while producer > consumer (ringbuf_map_poll)
        self._epoll.register(map_fd, select.EPOLLIN)
        self.malformed = 0
        self.discarded = 0

    def available(self) -> int:
        """Bytes written (or reserved) and not yet consumed."""
        return self._prod.value - self._cons.value

    def wait(self, timeout_ms: int) -> None:
        """Blocks until the kernel wakes readers or timeout_ms passes."""
        if self.available():
            return
        self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1, 1)

    def read(self, limit: int) -> list[tuple]:
        """Up to `limit` records, each the tuple of the record's fields,
        consumed at once (the consumer position moves once per call)."""
        cons = self._cons.value
        prod = self._prod.value
        out: list[tuple] = []
        view, base, mask, stride = self._view, self._page, self._mask, self._stride
        while cons < prod and len(out) < limit:
            start = base + (cons & mask)
            # a run of whole strides whose headers all say "committed, our
            # size" is one iter_unpack; the first other header is looked at
            # on its own
            n = min((prod - cons) // stride, limit - len(out))
            good = self._plain_run(start, n)
            if good:
                out += self._body.iter_unpack(view[start:start + good * stride])
                cons += good * stride
                if good == n:
                    continue
                start = base + (cons & mask)
            length = _U32.unpack_from(view, start)[0]
            if length & BUSY:
                break  # reserved, not committed yet: everything after it waits
            # committed and not a plain record of ours (the run took those):
            # discarded, or of another size
            if length & DISCARD:
                self.discarded += 1
            else:
                self.malformed += 1
            cons += _round8(HDR + (length & ~(BUSY | DISCARD)))
        self._cons.value = cons
        return out

    def _plain_run(self, start: int, n: int) -> int:
        """How many of the n strides from `start` hold plain committed records
        of our size: every header's length word, gathered with one strided
        view and compared at once."""
        if not n:
            return 0
        words = self._view[start:start + n * self._stride].cast("I")[::self._stride // 4].tobytes()
        if words == self._plain * n:
            return n
        plain = self._plain
        return next(i for i in range(n) if words[4 * i:4 * i + 4] != plain)

    def close(self) -> None:
        self._epoll.close()
        try:
            self._view.release()
        except BufferError:  # a caller still holds a slice: keep the mapping
            return
        del self._cons, self._prod
        _LIBC.munmap(ctypes.c_void_p(self._prod_addr), ctypes.c_size_t(self._prod_len))
        self._cons_map.close()


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_LIBC.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


def _mmap_readonly(fd: int, length: int, offset: int) -> int:
    addr = _LIBC.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if addr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of the ring buffer's data pages: {os.strerror(err)}")
    return addr
