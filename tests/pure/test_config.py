"""The configuration: file, then environment, then flags; every bad input named in one line."""

import re
from pathlib import Path

import pytest

from agent.config.example import render
from agent.config.load import load
from agent.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str) -> str:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def test_defaults_when_the_default_file_is_absent():
    cfg = load(None, env={})  # /etc/connscope/connscope.toml does not exist on a test host
    assert (cfg.agent.output, cfg.agent.connections, cfg.agent.window) == ("stdout", True, 60.0)
    assert cfg.source == {}


def test_precedence_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path, '[agent]\nwindow = 5\nstatus_interval = 7\ncpu_budget = 0.5\n'
                           '[filters]\nports = [80, 443]\n')
    cfg = load(path, env={"CONNSCOPE_AGENT_STATUS_INTERVAL": "8", "CONNSCOPE_AGENT_CPU_BUDGET": "0.4"},
               flags={"agent.cpu_budget": ("0.3", "--cpu-budget")})
    assert (cfg.agent.window, cfg.agent.status_interval, cfg.agent.cpu_budget) == (5.0, 8.0, 0.3)
    assert cfg.filters.ports == [80, 443]
    assert cfg.source == {"agent.window": path, "agent.status_interval": "environment CONNSCOPE_AGENT_STATUS_INTERVAL",
                          "agent.cpu_budget": "--cpu-budget", "filters.ports": path}


def test_environment_lists_and_booleans():
    cfg = load(None, env={"CONNSCOPE_FILTERS_PORTS": "80, 443", "CONNSCOPE_AGENT_CONNECTIONS": "no",
                          "CONNSCOPE_FILTERS_COMMS": "curl,nginx"})
    assert (cfg.filters.ports, cfg.agent.connections, cfg.filters.comms) == ([80, 443], False, ["curl", "nginx"])


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, '[agent]\noutput = "stdout"\nwindow = 3\n')
    assert load(None, env={"CONNSCOPE_CONFIG": path}).agent.window == 3.0


@pytest.mark.parametrize("text,needles", [
    ("[agent]\nwindw = 3\n", ["unknown key agent.windw", "keys in [agent] are: output,"]),
    ("[agnet]\n", ["unknown table [agnet]", "tables are: agent, filters, thresholds, kafka"]),
    ("window = 3\n", ["unknown table [window]"]),
    ("[agent]\nwindow = \"soon\"\n", ["agent.window = 'soon'", "is not a number"]),
    ("[agent]\nwindow = 0.5\n", ["agent.window = 0.5", "below its minimum", ">= 1"]),
    ("[agent]\noutput = \"syslog\"\n", ["agent.output = 'syslog'", "one of: stdout, kafka"]),
    ("[agent]\nconnections = 1\n", ["agent.connections = 1", "true or false"]),
    ("[agent]\nbuffer_pages = 3\n", ["agent.buffer_pages = 3", "power of two", "use 2 or 4"]),
    ("[agent]\nforce_hooks = [\"tcp_connect=pigeon\"]\n", ["agent.force_hooks", "tcp_connect=fentry|kprobe|tracepoint"]),
    ("[agent]\nprometheus = \"0.0.0.0:9477\"\n", ["agent.prometheus", "not a loopback address"]),
    ("[agent]\nprometheus = \"localhost\"\n", ["agent.prometheus", "HOST:PORT"]),
    ("[filters]\nports = [80, 70000]\n", ["filters.ports: 70000", "1-65535"]),
    ("[filters]\ncomms = [\"a-name-longer-than-15\"]\n", ["filters.comms", "15 bytes"]),
    ("[filters]\nfamily = \"ipx\"\n", ["filters.family = 'ipx'", "any, ipv4, ipv6"]),
    ("[thresholds]\nrefused = -1\n", ["thresholds.refused = -1", "minimum"]),
    ("[agent\n", ["line 1, column 7", "unclosed table header `[agent`"]),
])
def test_bad_file_names_key_value_and_what_is_allowed(tmp_path, text, needles):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as err:
        load(path, env={})
    line = err.value.one_line()
    assert "\n" not in line and err.value.exit_code == 2
    for n in needles:
        assert n in line, (n, line)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load(str(tmp_path / "nope.toml"), env={})
    with pytest.raises(UsageError, match="is a directory"):
        load(str(tmp_path), env={})


def test_unknown_environment_variable_is_an_error():
    with pytest.raises(UsageError, match="unknown environment variable CONNSCOPE_AGENT_OUTPT"):
        load(None, env={"CONNSCOPE_AGENT_OUTPT": "kafka"})


def test_bad_flag_value_names_the_flag():
    with pytest.raises(UsageError) as err:
        load(None, env={}, flags={"agent.window": ("abc", "--window")})
    assert "agent.window = 'abc' (--window) is not a number" in err.value.one_line()


def test_shipped_example_lists_every_key_with_its_default():
    shipped = (REPO / "etc" / "connscope.toml.example").read_text()
    assert shipped == render(), "regenerate: .venv/bin/python -m agent.config.example > etc/connscope.toml.example"


def test_example_uncommented_loads_as_the_defaults(tmp_path):
    value = re.compile(r"^# ([a-z_]+ = .*)$")
    text = "\n".join(value.sub(r"\1", line) for line in render().splitlines())
    cfg, defaults = load(write(tmp_path, text), env={}), load(None, env={})
    assert len(cfg.source) > 30  # every key was read from the file...
    for table in ("agent", "filters", "thresholds", "kafka"):
        assert getattr(cfg, table) == getattr(defaults, table), table  # ...with the default value
