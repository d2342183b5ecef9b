"""Secrets stay on the host: command lines are scrubbed before a record leaves the agent.

Real processes carry a secret in their command line in each form a
credential takes, and make real (refused) connections on loopback; the
agent's summary and connect_refused diagnosis name each of them. Every
secret is marked (tests/agentrun.py), so any record that held one fails.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..agentrun import AgentRun, is_root, mark_secret

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (loads eBPF programs)")

PYTHON = "/usr/bin/python3"
# Short: the command line is cut at 512 characters, and the secrets come after it.
CLIENT = ("import socket,os,time\nfor _ in range(3):\n try: socket.create_connection(('127.0.0.1',"
          "int(os.environ['CS_PORT'])),1).close()\n except OSError: pass\ntime.sleep(120)")
MASK = "********"

# form -> (program name, arguments with {S} for the secret, what must still show)
FORMS = {
    "name=value": ("app", ["--password={S}", "--verbose"], ["--password=" + MASK, "--verbose"]),
    "name value": ("app", ["--token", "{S}", "serve"], ["--token " + MASK + " serve"]),
    "-name value": ("app", ["-apikey", "{S}"], ["-apikey " + MASK]),
    "NAME=value": ("app", ["DB_SECRET={S}", "run"], ["DB_SECRET=" + MASK + " run"]),
    "mysql -p": ("mysql", ["-uroot", "-p{S}", "prod"], ["-uroot -p" + MASK + " prod"]),
    "redis-cli -a": ("redis-cli", ["-h", "cache", "-a", "{S}", "ping"], ["-h cache -a " + MASK + " ping"]),
    "curl -u": ("curl", ["-u", "bob:{S}", "http://x/"], ["-u bob:" + MASK + " http://x/"]),
    "auth header": ("curl", ["-H", "Authorization: Bearer {S}", "https://x/"], ["-H Authorization: " + MASK]),
    "url userinfo": ("psql", ["postgresql://admin:{S}@db.internal/prod"],
                     ["postgresql://admin:" + MASK + "@db.internal/prod"]),}


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: every connect is refused
    return port


class Clients:
    """One process per form, named as its program (a link to python3)."""

    def __init__(self, port: int, secret_of):
        self._dir = tempfile.TemporaryDirectory(prefix="connscope-secrets-")
        self.procs: dict[str, subprocess.Popen] = {}
        for i, (form, (program, args, _)) in enumerate(FORMS.items()):
            link = Path(self._dir.name) / str(i) / program
            link.parent.mkdir()
            link.symlink_to(PYTHON)
            argv = [str(link), "-c", CLIENT, *(a.replace("{S}", secret_of(form)) for a in args)]
            self.procs[form] = subprocess.Popen(argv, env={**os.environ, "CS_PORT": str(port)},
                                                stdin=subprocess.DEVNULL)

    def close(self) -> None:
        for p in self.procs.values():
            p.kill()
            p.wait()
        self._dir.cleanup()


def _records_per_pid(agent: AgentRun, pids: dict[str, int], kind: str) -> dict[str, dict]:
    """The first `kind` record of each process (a process whose connects span
    two windows has two summaries: wait for every pid, not for a count)."""
    deadline = time.monotonic() + 30
    while True:
        by_pid: dict[int, dict] = {}
        for r in agent.records():
            if r["type"] == kind and r.get("pid") in pids.values():
                by_pid.setdefault(r["pid"], r)
        if len(by_pid) == len(pids) or time.monotonic() > deadline:
            return {form: by_pid[pid] for form, pid in pids.items() if pid in by_pid}
        time.sleep(0.1)


def _run(mode_args: tuple[str, ...], secret_of) -> tuple[dict, dict, dict]:
    port = _closed_port()
    with AgentRun("--summary", "--window", "1", "--port", str(port), "--threshold", "refused=1", *mode_args) as agent:
        clients = Clients(port, secret_of)
        try:
            pids = {form: p.pid for form, p in clients.procs.items()}
            summaries = _records_per_pid(agent, pids, "summary")
            diagnoses = _records_per_pid(agent, pids, "diagnosis")
        finally:
            clients.close()
        agent.stop()
    return pids, summaries, diagnoses


def test_every_form_of_secret_is_scrubbed_in_summaries_and_diagnoses():
    token = secrets.token_hex(4)
    secret_of = {form: f"s3cr3t{i}{token}" for i, form in enumerate(FORMS)}.__getitem__
    mark_secret(*(secret_of(f) for f in FORMS))
    pids, summaries, diagnoses = _run((), secret_of)
    for kind, recs in (("summary", summaries), ("diagnosis", diagnoses)):
        assert set(recs) == set(FORMS), (kind, sorted(recs))
        for form, (program, _, shown) in FORMS.items():
            cmdline = recs[form]["cmdline"]
            assert cmdline.split(" ", 1)[0].endswith("/" + program), cmdline  # the program still shows
            for text in shown:
                assert text in cmdline, (form, kind, cmdline)


def test_cmdline_full_shows_the_arguments_and_off_shows_none():
    token = secrets.token_hex(4)
    secret_of = lambda form: f"visible{token}"  # noqa: E731  (not marked: full mode shows it)
    _, summaries, _ = _run(("--cmdline", "full"), secret_of)
    assert f"--password=visible{token} --verbose" in summaries["name=value"]["cmdline"]
    assert f"-pvisible{token} prod" in summaries["mysql -p"]["cmdline"]
    _, summaries, diagnoses = _run(("--cmdline", "off"), secret_of)
    assert {r["cmdline"] for r in (*summaries.values(), *diagnoses.values())} == {None}
