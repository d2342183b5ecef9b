"""Configuration flags shared by `run` and `check`: every key of agent/config/model.py.

The common keys have short names (--output, --pid, ...), the Kafka ones
are --kafka-<key>. Flags are read as text and go through the same checks
as the file, so a bad value gets the same one-line error from any source.
"""

from __future__ import annotations

import functools

import click

from ..config.load import load, section_fields
from ..config.model import DEFAULT_PATH

# flag name -> "section.key", for keys that have a familiar name from `trace`
_NAMED = {
    "output": "agent.output", "window": "agent.window", "status-interval": "agent.status_interval",
    "cpu-budget": "agent.cpu_budget", "queue-max": "agent.queue_max", "buffer-pages": "agent.buffer_pages",
    "failure-records": "agent.failure_records", "connection-records": "agent.connection_records",
    "state-dir": "agent.state_dir", "prometheus": "agent.prometheus",
    "prometheus-destinations": "agent.prometheus_destinations", "prometheus-series": "agent.prometheus_series",
    "family": "filters.family",
}
_MULTI = {"force-hook": "agent.force_hooks", "pid": "filters.pids", "comm": "filters.comms", "port": "filters.ports"}
_BOOLS = {"connections": "agent.connections", "strict": "agent.strict", "failures": "filters.failures"}
_FLAG_OF = {key: flag for flag, key in {**_NAMED, **_MULTI, **_BOOLS}.items()}  # "section.key" -> flag


def _help(full: str) -> str:
    table, name = full.split(".")
    f = section_fields(table)[name]
    text = f.metadata.get("help", "")
    if f.metadata.get("choices"):
        text += f" [{'|'.join(map(str, f.metadata['choices']))}]"
    return f"{text} (config {full})"


def _key_options(fn):
    kafka = [n for n in _kafka_keys()]
    for name in reversed(kafka):
        fn = click.option(f"--kafka-{name.replace('_', '-')}", f"kafka__{name}", metavar="VALUE",
                          help=_help(f"kafka.{name}"))(fn)
    for flag, full in reversed(list(_BOOLS.items())):
        fn = click.option(f"--{flag}/--no-{flag}", full.replace(".", "__"), default=None,
                          help=_help(full))(fn)
    for flag, full in reversed(list(_MULTI.items())):
        fn = click.option(f"--{flag}", full.replace(".", "__"), multiple=True, metavar="VALUE",
                          help=_help(full) + " (repeatable)")(fn)
    for flag, full in reversed(list(_NAMED.items())):
        fn = click.option(f"--{flag}", full.replace(".", "__"), metavar="VALUE", help=_help(full))(fn)
    return fn


def _kafka_keys() -> list[str]:
    try:
        return list(section_fields("kafka"))
    except ImportError:  # the Kafka sink is not installed with this build
        return []


def _flag_values(kw: dict) -> dict:
    out = {}
    for param, value in kw.items():
        if "__" not in param or value is None or value == ():
            continue
        full = param.replace("__", ".", 1)
        flag = _FLAG_OF.get(full) or "kafka-" + full.split(".", 1)[1].replace("_", "-")
        if isinstance(value, tuple):
            value = ",".join(value)
        out[full] = (value, f"--{flag}")
    return out


def config_options(fn):
    """--config, --family, --threshold and one flag per key; the command gets `load_config` instead."""
    @click.option("--config", "config_path", metavar="FILE",
                  help=f"TOML configuration [default: {DEFAULT_PATH}, or $CONNSCOPE_CONFIG; absent = defaults].")
    @click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE",
                  help="A diagnosis threshold, e.g. churn_per_s=50 (config [thresholds]; repeatable).")
    @_key_options
    @functools.wraps(fn)
    def wrapper(config_path, thresholds, **kw):
        keys = {k: kw.pop(k) for k in list(kw) if "__" in k}
        flags = _flag_values(keys)
        for pair in thresholds:
            name, sep, value = pair.partition("=")
            if not sep or name not in section_fields("thresholds"):
                raise click.BadParameter(f"{pair!r} is not NAME=VALUE with NAME among: "
                                         f"{', '.join(section_fields('thresholds'))}", param_hint="--threshold")
            flags[f"thresholds.{name}"] = (value, "--threshold")
        return fn(load_config=lambda: load(config_path, flags=flags), **kw)

    return wrapper
