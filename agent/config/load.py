"""Configuration from the TOML file, then `CONNSCOPE_*` variables, then flags.

Everything is checked before the agent starts: an unknown table or key, a
value of the wrong type or out of range, and an unreadable file each stop
it with one line naming the key, the value and what is allowed (exit 2).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from typing import Mapping

from ..errors import UsageError
from .model import DEFAULT_PATH, SECTIONS, Config
from .values import convert

ENV_PREFIX = "CONNSCOPE_"
ENV_CONFIG = "CONNSCOPE_CONFIG"  # the file's path, when not given by --config


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section]())}


def needs_restart(f: dataclasses.Field) -> bool:
    """A key a reload cannot apply (reload="restart" in model.py)."""
    return f.metadata.get("reload") == "restart"


def env_name(section: str, name: str) -> str:
    return f"{ENV_PREFIX}{section}_{name}".upper()


def all_keys() -> list[str]:
    return [f"{s}.{k}" for s in SECTIONS for k in section_fields(s)]


def read_file(path: str, explicit: bool) -> dict:
    """The parsed TOML, {} when the default file is absent."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if not explicit:
            return {}
        raise UsageError(f"configuration file {path} does not exist",
                         "create it (see etc/connscope.toml.example) or pass another --config") from None
    except PermissionError:
        raise UsageError(f"configuration file {path} is not readable by uid {os.getuid()}",
                         "fix its permissions (the service reads it as its own user)") from None
    except IsADirectoryError:
        raise UsageError(f"configuration file {path} is a directory", "pass the path of a TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise toml_error(path, err) from None


_AT = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")
_UNCLOSED_HEADER = re.compile(r"^\s*(\[[^\]#]*?)\s*(#.*)?$")
_PLAIN = [  # tomllib's wording -> plain words
    (re.compile(r"^Cannot declare \((.*?),?\) twice$"),
     lambda m: "table [" + ".".join(p.strip(" '") for p in m.group(1).split(",")) + "] is declared twice"),
    (re.compile(r"^Cannot overwrite a value$"), lambda m: "a key is set twice"),
    (re.compile(r"^Invalid value$"), lambda m: "the value is missing or not TOML (text needs quotes)"),
    (re.compile(r"^Illegal character '\\n'$"), lambda m: "a string is not closed before the end of the line"),
]


def toml_error(path: str, err: Exception) -> UsageError:
    """A TOML syntax error as one line naming the file, the line and the
    column in plain words. An unclosed table header is named as such, even
    when tomllib reports the damage it did further down."""
    m = _AT.match(str(err))
    if m is None:
        return UsageError(f"configuration file {path} is not valid TOML: {err}", "fix the syntax")
    what, line, col = m.group(1), int(m.group(2)), int(m.group(3))
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        lines = []
    for n, text in enumerate(lines[:line], start=1):
        h = _UNCLOSED_HEADER.match(text)
        if h and text.lstrip().startswith("[") and "]" not in text.split("#")[0]:
            name = h.group(1).strip()
            return UsageError(f"configuration file {path}, line {n}, column {len(text.split('#')[0].rstrip()) + 1}: "
                              f"unclosed table header `{name}`", f"close it: `{name}]`")
    for pattern, plain in _PLAIN:
        p = pattern.match(what)
        if p:
            what = plain(p)
            break
    return UsageError(f"configuration file {path}, line {line}, column {col}: {what}", "fix the syntax there")


def _from_file(doc: dict, path: str) -> dict[str, tuple[object, str]]:
    out = {}
    for table, body in doc.items():
        if table not in SECTIONS:
            raise UsageError(f"{path}: unknown table [{table}]", f"tables are: {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise UsageError(f"{path}: {table} must be a table ([{table}])", f"write [{table}] and its keys below it")
        fields = section_fields(table)
        for name, value in body.items():
            if name not in fields:
                raise UsageError(f"{path}: unknown key {table}.{name}",
                                 f"keys in [{table}] are: {', '.join(fields)}")
            out[f"{table}.{name}"] = (value, path)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    names = {env_name(s, k): f"{s}.{k}" for s in SECTIONS for k in section_fields(s)}
    out = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG:
            continue
        if var not in names:
            raise UsageError(f"unknown environment variable {var}",
                             f"unset it, or use CONNSCOPE_<TABLE>_<KEY> such as {env_name('agent', 'output')}")
        out[names[var]] = (value, f"environment {var}")
    return out


def load(path: str | None = None, env: Mapping[str, str] | None = None,
         flags: Mapping[str, tuple[object, str]] | None = None) -> Config:
    """The configuration. `flags` maps "section.key" to (value, "--flag-name")."""
    env = os.environ if env is None else env
    explicit = path is not None or ENV_CONFIG in env
    path = path or env.get(ENV_CONFIG) or DEFAULT_PATH
    values = _from_file(read_file(path, explicit), path)
    values.update(_from_env(env))
    values.update(flags or {})
    cfg = _build(values)
    cfg.kafka.resolve_secrets(env)
    validate(cfg)
    return cfg


def from_values(values: Mapping[str, tuple[object, str]]) -> Config:
    """The defaults with these "section.key" -> (value, origin) overlaid: no
    file and no environment (`trace` and `top`, which an operator runs by
    hand and which must not take a service's Kafka output from /etc)."""
    cfg = _build(dict(values))
    validate(cfg)
    return cfg


def _build(values: dict[str, tuple[object, str]]) -> Config:
    sections, source = {}, {}
    for table, factory in SECTIONS.items():
        cls = factory()
        kw = {}
        for name, f in section_fields(table).items():
            full = f"{table}.{name}"
            if full in values:
                raw, origin = values[full]
                kw[name] = convert(full, f, cls, raw, origin)
                source[full] = origin
        sections[table] = cls(**kw)
    return Config(**sections, source=source)


def validate(cfg: Config) -> None:
    """Checks beyond one key's type: powers of two, name lengths, hooks, the sink's own settings."""
    def where(key: str) -> str:
        return f" ({cfg.source[key]})" if key in cfg.source else ""

    pages = cfg.agent.buffer_pages
    if pages & (pages - 1):
        raise UsageError(f"agent.buffer_pages = {pages}{where('agent.buffer_pages')} is not a power of two",
                         f"use {1 << (pages.bit_length() - 1)} or {1 << pages.bit_length()}")
    for comm in cfg.filters.comms:
        if len(comm.encode()) > 15:
            raise UsageError(f"filters.comms: {comm!r}{where('filters.comms')} is longer than 15 bytes",
                             "use the name as the kernel truncates it (see /proc/PID/comm)")
    for port in cfg.filters.ports:
        if not 1 <= port <= 65535:
            raise UsageError(f"filters.ports: {port}{where('filters.ports')} is not a port", "use 1-65535")
    from ..kernel.hooks import force_choices, parse_force
    try:
        parse_force(cfg.agent.force_hooks)
    except ValueError as bad:
        raise UsageError(f"agent.force_hooks: {str(bad)!r}{where('agent.force_hooks')} is not HOOK=METHOD",
                         f"use one of {force_choices()}") from None
    if cfg.agent.prometheus:
        from ..metrics.prometheus import parse_listen
        parse_listen(cfg.agent.prometheus, "agent.prometheus")
    if cfg.agent.output == "kafka":
        cfg.kafka.validate()


def changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """("section.key"s that differ and a reload applies, those that need a restart)."""
    live, restart = [], []
    for table in SECTIONS:
        for name, f in section_fields(table).items():
            if getattr(getattr(old, table), name) != getattr(getattr(new, table), name):
                (restart if needs_restart(f) else live).append(f"{table}.{name}")
    return live, restart
