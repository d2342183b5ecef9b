"""Runs the real agent (`connscope trace --json`, or `run`) for a test and reads its records.

Every record the agent writes is validated against schema v1, its `seq`
numbers must run 1, 2, 3, ... without a gap, and it must hold no string a
test marked secret: a test that uses AgentRun checks the public contract as
a side effect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .schema import assert_valid

REPO = Path(__file__).resolve().parents[1]


# Strings a test marked secret (mark_secret): no record any test reads may
# contain one. The agent must scrub them before a record leaves it.
SECRETS: set[str] = set()


def mark_secret(*secrets: str) -> None:
    """Every record read from now on, by any test, is checked not to hold these."""
    SECRETS.update(s for s in secrets if s)


def connscope_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


class AgentRun:
    def __init__(self, *args: str, start_timeout: float = 30.0, command: tuple[str, ...] = ("trace", "--json"),
                 env: dict | None = None):
        self._dir = tempfile.TemporaryDirectory(prefix="connscope-test-")
        self.out_path = Path(self._dir.name) / "records.jsonl"
        self.err_path = Path(self._dir.name) / "stderr.txt"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(connscope_argv(*command, *args), stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, cwd=REPO,
                                     env=None if env is None else {**os.environ, **env})
        self._pos = 0
        self._records: list[dict] = []
        self.start = self.wait_for(lambda r: r["type"] == "agent" and r["event"] == "start", timeout=start_timeout)[0]

    # --- reading -----------------------------------------------------------
    def _read_new(self) -> None:
        with open(self.out_path, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._pos += end
        # Every line is kept before any is judged: one bad record fails the
        # test that reads it, not every later test of a shared agent.
        problems = []
        for line in data[:end].splitlines():
            rec = json.loads(line)
            leaked = [x for x in SECRETS if x.encode() in line]
            if leaked:
                problems.append(AssertionError(f"secret {leaked} in a {rec.get('type')} record: {line[:300]!r}"))
            try:
                assert_valid(rec)
                last = self._records[-1]["seq"] if self._records else 0
                assert rec["seq"] == last + 1, f"seq gap: {rec['seq']} after {last}"
            except AssertionError as err:
                problems.append(err)
            self._records.append(rec)
        if problems:
            raise problems[0]

    def records(self) -> list[dict]:
        self._read_new()
        return list(self._records)

    def wait_for(self, predicate: Callable[[dict], bool], count: int = 1, timeout: float = 15.0) -> list[dict]:
        """Waits until `count` records match; returns them (fails with what was seen)."""
        deadline = time.monotonic() + timeout
        while True:
            self._read_new()
            found = [r for r in self._records if predicate(r)]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}): {self.stderr()}")
            if time.monotonic() > deadline:
                tail = [r for r in self._records if r["type"] != "agent"][-8:]
                raise AssertionError(f"{len(found)}/{count} matching records after {timeout}s; last: {tail}")
            time.sleep(0.05)

    def summed(self, pid: int, field: str, want, timeout: float, at_least: bool = False):
        """A summary field summed over a process's windows (a dict field, such
        as failures, summed per key), once it equals `want` (or reaches it,
        with at_least) or `timeout` passed: the windows that could hold the
        process's last connections have closed. Returns the total for the
        caller to assert."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r[field] for r in self.records() if r["type"] == "summary" and r["pid"] == pid]
            if rows and isinstance(rows[0], dict):
                total: object = {}
                for row in rows:
                    for k, v in row.items():
                        total[k] = total.get(k, 0) + v
            else:
                total = sum(rows)
            if total == want or (at_least and total >= want) or time.monotonic() > deadline:
                return total
            time.sleep(0.2)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    # --- stopping ------------------------------------------------------------
    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> list[dict]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("agent did not stop within {timeout}s of signal {sig}")
        self._out.close()
        self._err.close()
        return self.records()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self._out, self._err):
            if not f.closed:
                f.close()
        self._dir.cleanup()

    def __enter__(self) -> "AgentRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def skipped_runs(records: list[dict]) -> int:
    """Runs of our eBPF programs the kernel skipped (its recursion guard), as
    the agent reported them in `lost` records: each costs at most one record
    or one transition of one socket."""
    return sum(r["count"] for r in records if r["type"] == "lost" and r["reason"] == "recursion_miss")


def probed_method(hook_name: str) -> str | None:
    """The method the agent should choose for a hook: the first whose probe
    passes on this kernel (KERNEL-FACTS: raw_tracepoint for the socket hooks)."""
    from agent.kernel.hooks import hook

    return next((m.name for m in hook(hook_name).methods if m.probe()), None)


def is_root() -> bool:
    return os.geteuid() == 0


@contextmanager
def own_tracer(needs: tuple[str, str] | None = None, why: str = "", make=None, **opts) -> Iterator:
    """A Tracer loaded in the test's own process (LoadOptions(**opts); `make`
    builds it, Tracer by default), closed afterwards. Skips without root, and
    when this kernel gives the hook in `needs` (hook, method) another method:
    `why` says what the test cannot do then."""
    import pytest

    if not is_root():
        pytest.skip("needs root (loads eBPF programs)")
    if needs is not None and probed_method(needs[0]) != needs[1]:
        pytest.skip(why)
    from agent.kernel.loader import LoadOptions, Tracer

    t = (make or Tracer)(LoadOptions(**opts))
    try:
        yield t
    finally:
        t.close()
