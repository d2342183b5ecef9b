"""The "newc" cpio format the kernel unpacks as an initramfs (regular files only).

Directories that a path needs are added before it; the archive ends with
the TRAILER!!! entry. Format: Documentation/driver-api/early-userspace/
buffer-format.rst: a 110-byte ASCII header, the name, padding to 4 bytes,
the data, padding to 4 bytes.
"""

from __future__ import annotations

_S_IFREG, _S_IFDIR = 0o100000, 0o040000


def _entry(ino: int, name: str, mode: int, data: bytes = b"") -> bytes:
    name_b = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = head + name_b
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def newc_archive(files: list[tuple[str, bytes, int]]) -> bytes:
    """An archive of (relative path, data, permission bits) files."""
    parts, dirs, ino = [], set(), 1
    for path, data, perm in files:
        segs = path.split("/")
        for i in range(1, len(segs)):
            d = "/".join(segs[:i])
            if d not in dirs:
                dirs.add(d)
                parts.append(_entry(ino, d, _S_IFDIR | 0o755))
                ino += 1
        parts.append(_entry(ino, path, _S_IFREG | perm, data))
        ino += 1
    parts.append(_entry(0, "TRAILER!!!", 0))
    return b"".join(parts)
