"""A minimal reader of the kernel's BTF (/sys/kernel/btf/vmlinux).

Used to find type ids (the fentry probe needs tcp_connect's FUNC id) and,
where a struct field is ever needed, its offset as *this* kernel lays it
out: the Debian headers BCC compiles against here are from 6.1 and their
offsets are wrong for 6.18 (see KERNEL-FACTS.md). Format: kernel
Documentation/bpf/btf.rst; only the walk over types is implemented.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VMLINUX = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_DECL_TAG, KIND_ENUM64 = 12, 13, 14, 15, 17, 19

# Bytes that follow the 12-byte btf_type header, per kind: (fixed, per vlen item).
_TRAILER = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}


class BTFError(Exception):
    pass


@dataclass(frozen=True)
class BTFType:
    type_id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    offset: int  # of the btf_type header within the type section


class BTF:
    """Types of one BTF blob, indexed by (kind, name)."""

    def __init__(self, blob: bytes):
        if len(blob) < 24:
            raise BTFError("BTF blob too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob
        )
        if magic != BTF_MAGIC:
            raise BTFError(f"bad BTF magic {magic:#x}")
        self._types = blob[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self._by_name: dict[tuple[int, str], BTFType] = {}
        self._walk()

    @classmethod
    def vmlinux(cls, path: str = VMLINUX) -> "BTF":
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except OSError as err:
            raise BTFError(f"cannot read {path}: {err.strerror}") from err

    def _name(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _walk(self) -> None:
        pos, type_id, data = 0, 1, self._types
        while pos + 12 <= len(data):
            name_off, info, _size_or_type = struct.unpack_from("<III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            name = self._name(name_off) if name_off else ""
            t = BTFType(type_id, kind, name, vlen, bool(info >> 31), pos)
            if name:
                self._by_name.setdefault((kind, name), t)
            fixed, per_item = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + per_item * vlen
            type_id += 1

    def find(self, kind: int, name: str) -> BTFType | None:
        return self._by_name.get((kind, name))

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of a (non-bitfield) member of a named struct."""
        t = self.find(KIND_STRUCT, struct_name)
        if t is None:
            raise BTFError(f"struct {struct_name} not in BTF")
        for i in range(t.vlen):
            name_off, _type, offset = struct.unpack_from("<III", self._types, t.offset + 12 + 12 * i)
            if name_off and self._name(name_off) == member:
                bits = offset & 0xFFFFFF if t.kind_flag else offset
                if bits % 8:
                    raise BTFError(f"{struct_name}.{member} is a bitfield")
                return bits // 8
        raise BTFError(f"{struct_name} has no member {member}")
