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
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG = 8, 9, 10, 11, 18
_QUALIFIERS = (KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)

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


_PARSED: dict[str, "BTF"] = {}


@dataclass(frozen=True)
class BTFType:
    type_id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    offset: int  # of the btf_type header within the type section
    ref: int = 0  # the header's size_or_type: the referred type id for PTR, TYPEDEF, qualifiers


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
        self._by_id: list[BTFType] = []  # type id i at [i - 1]
        self._walk()

    @classmethod
    def vmlinux(cls, path: str = VMLINUX) -> "BTF":
        """The kernel's BTF, parsed once (0.2 s, tens of MB of index) and
        kept until forget(): every probe at start-up asks it something."""
        if path not in _PARSED:
            try:
                with open(path, "rb") as f:
                    _PARSED[path] = cls(f.read())
            except OSError as err:
                raise BTFError(f"cannot read {path}: {err.strerror}") from err
        return _PARSED[path]

    @staticmethod
    def forget() -> None:
        """Drops the parsed BTF once the programs are loaded (the probes
        keep their answers)."""
        _PARSED.clear()

    def _name(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _walk(self) -> None:
        pos, type_id, data = 0, 1, self._types
        while pos + 12 <= len(data):
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            name = self._name(name_off) if name_off else ""
            t = BTFType(type_id, kind, name, vlen, bool(info >> 31), pos, size_or_type)
            self._by_id.append(t)
            if name:
                self._by_name.setdefault((kind, name), t)
            fixed, per_item = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + per_item * vlen
            type_id += 1

    def find(self, kind: int, name: str) -> BTFType | None:
        return self._by_name.get((kind, name))

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of a (non-bitfield) member of a named struct, also one
        inside an anonymous struct or union member (sock_common's skc_daddr)."""
        t = self.find(KIND_STRUCT, struct_name)
        if t is None:
            raise BTFError(f"struct {struct_name} not in BTF")
        bits = self._member_bits(t, member)
        if bits is None:
            raise BTFError(f"{struct_name} has no member {member}")
        if bits % 8:
            raise BTFError(f"{struct_name}.{member} is a bitfield")
        return bits // 8

    def member_bitfield(self, struct_name: str, member: str) -> tuple[int, int]:
        """(bit offset, width in bits) of a bitfield member of a named struct
        (tcp_sock.nonagle). BTF gives the width only with the struct's
        kind_flag set; without it the member is a whole integer."""
        t = self.find(KIND_STRUCT, struct_name)
        if t is None:
            raise BTFError(f"struct {struct_name} not in BTF")
        found = self._member_bits(t, member, with_width=True)
        if found is None:
            raise BTFError(f"{struct_name} has no member {member}")
        return found

    def enum_value(self, enum_name: str, name: str) -> int:
        """The value of one enumerator (enum sock_flags' SOCK_KEEPOPEN)."""
        t = self.find(KIND_ENUM, enum_name)
        if t is None:
            raise BTFError(f"enum {enum_name} not in BTF")
        for i in range(t.vlen):
            name_off, value = struct.unpack_from("<Ii", self._types, t.offset + 12 + 8 * i)
            if self._name(name_off) == name:
                return value
        raise BTFError(f"enum {enum_name} has no {name}")

    def _member_bits(self, t: BTFType, member: str, with_width: bool = False):
        for i in range(t.vlen):
            name_off, type_id, offset = struct.unpack_from("<III", self._types, t.offset + 12 + 12 * i)
            bits = offset & 0xFFFFFF if t.kind_flag else offset
            if name_off:
                if self._name(name_off) == member:
                    if not with_width:
                        return bits
                    return bits, (offset >> 24 if t.kind_flag else 0) or self._int_bits(type_id)
                continue
            inner = self._type(type_id)
            if inner is not None and inner.kind in (KIND_STRUCT, KIND_UNION):
                found = self._member_bits(inner, member, with_width)
                if found is not None:
                    return (bits + found[0], found[1]) if with_width else bits + found
        return None

    def _int_bits(self, type_id: int) -> int:
        """The width of an integer type (through typedefs and qualifiers)."""
        t = self._skip_qualifiers(self._type(type_id))
        while t is not None and t.kind == KIND_TYPEDEF:
            t = self._skip_qualifiers(self._type(t.ref))
        if t is None or t.kind != KIND_INT:
            raise BTFError("bitfield of a non-integer type")
        (info,) = struct.unpack_from("<I", self._types, t.offset + 12)
        return info & 0xFF

    def _type(self, type_id: int) -> BTFType | None:
        return self._by_id[type_id - 1] if 0 < type_id <= len(self._by_id) else None

    def _skip_qualifiers(self, t: BTFType | None) -> BTFType | None:
        while t is not None and t.kind in _QUALIFIERS:
            t = self._type(t.ref)
        return t

    def raw_tracepoint_args(self, name: str) -> list[str]:
        """The C arguments a raw tracepoint passes, from its btf_trace_<name>
        typedef: the struct name for a struct pointer ("struct sock *"),
        else the kind ("int", ...). The typedef's first (void *) argument,
        the tracepoint's data, is left out."""
        t = self.find(KIND_TYPEDEF, f"btf_trace_{name}")
        ptr = self._type(t.ref) if t else None
        proto = self._type(ptr.ref) if ptr and ptr.kind == KIND_PTR else None
        if proto is None or proto.kind != KIND_FUNC_PROTO:
            raise BTFError(f"no btf_trace_{name} prototype in BTF")
        out = []
        for i in range(1, proto.vlen):
            _name_off, type_id = struct.unpack_from("<II", self._types, proto.offset + 12 + 8 * i)
            arg = self._skip_qualifiers(self._type(type_id))
            while arg is not None and arg.kind == KIND_TYPEDEF:
                arg = self._skip_qualifiers(self._type(arg.ref))
            if arg is not None and arg.kind == KIND_PTR:
                target = self._skip_qualifiers(self._type(arg.ref))
                out.append(f"struct {target.name} *" if target and target.kind == KIND_STRUCT else "pointer")
            else:
                out.append({KIND_INT: "int", KIND_ENUM: "enum", KIND_ENUM64: "enum"}.get(arg.kind if arg else 0, "other"))
        return out
