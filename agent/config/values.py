"""One key's value, checked against its field: from TOML types or from text.

Text comes from environment variables and flags; TOML values arrive typed.
Both end in the same checks, so a bad value gets the same message whatever
its source: the key, the value, and what is allowed.
"""

from __future__ import annotations

import dataclasses
import typing

from ..errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def field_kind(f: dataclasses.Field, owner: type) -> tuple[type, bool, bool]:
    """(scalar type, is_list, optional) of a config field."""
    hint = typing.get_type_hints(owner)[f.name]
    optional = False
    args = typing.get_args(hint)
    if type(None) in args:
        optional = True
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


def _describe(kind: type, is_list: bool) -> str:
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    return f"a list of {name.replace('an ', '').replace('a ', '')}s" if is_list else name


def _scalar_from_text(kind: type, text: str):
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError
    if kind is int:
        return int(text, 0)
    if kind is float:
        return float(text)
    return text


def _scalar_typed(kind: type, value):
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError


def convert(name: str, f: dataclasses.Field, owner: type, value, origin: str):
    """The value for field `f` (`name` = "section.key"), or UsageError naming all three."""
    kind, is_list, optional = field_kind(f, owner)
    if optional and isinstance(value, str) and value.strip() == "":
        return None  # "" in a file, variable or flag unsets an optional key
    try:
        if isinstance(value, str) and (kind is not str or is_list):
            if is_list:
                parts = [p for p in (s.strip() for s in value.split(",")) if p]
                out = [_scalar_from_text(kind, p) for p in parts]
            else:
                out = _scalar_from_text(kind, value)
        elif is_list:
            if not isinstance(value, list):
                raise ValueError
            out = [_scalar_typed(kind, v) for v in value]
        else:
            out = _scalar_typed(kind, value)
    except ValueError:
        raise UsageError(f"{name} = {value!r} ({origin}) is not {_describe(kind, is_list)}",
                         f"set {name} to {_describe(kind, is_list)}") from None
    check(name, f, out, origin)
    return out


def check(name: str, f: dataclasses.Field, value, origin: str) -> None:
    """Choices and minimum from the field's metadata."""
    meta = f.metadata or {}
    items = value if isinstance(value, list) else [value]
    choices = meta.get("choices") or ()
    minimum = meta.get("minimum")
    for item in items:
        if choices and item not in choices:
            raise UsageError(f"{name} = {item!r} ({origin}) is not allowed",
                             f"use one of: {', '.join(map(str, choices))}")
        if minimum is not None and isinstance(item, (int, float)) and item < minimum:
            raise UsageError(f"{name} = {item!r} ({origin}) is below its minimum",
                             f"use a value >= {minimum:g}")
