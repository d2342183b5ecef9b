"""The configurations under test and one running tracer: start-up, CPU, RSS, stop.

Output goes to a file on tmpfs (/dev/shm), not /dev/null: writing there costs
the tracer what /dev/null costs plus a memory copy, and lets the bench read the
first line (start-up time) and count the records afterwards. The file is
deleted once counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .gen import BenchError

REPO = Path(__file__).resolve().parents[1]
CONNSCOPE = REPO / ".venv" / "bin" / "connscope"  # not ./connscope: no set-up check (or pip) mid-run
BCC_READY = Path(__file__).resolve().parent / "bcc_ready.py"
SYS_PY = "/usr/bin/python3"  # Debian's python, which has Debian's bcc

# Service mode, in ONE place. `connscope run` (the daemon) with its stdout sink
# and no per-connection records is the service; until it exists, the same
# summaries come from `trace --summary`. service_args() picks at bench start.
SERVICE_RUN = ["run", "--no-connections"]
SERVICE_FALLBACK = ["trace", "--summary", "--json"]


def service_args() -> list[str]:
    """SERVICE_RUN when this checkout has `connscope run`, else SERVICE_FALLBACK."""
    cp = subprocess.run([str(CONNSCOPE), "run", "--help"], capture_output=True, timeout=60)
    return SERVICE_RUN if cp.returncode == 0 else SERVICE_FALLBACK


@dataclass
class Config:
    """One configuration: how to start it and how many output records a connection should give."""

    name: str
    argv: list[str] | None  # None: bare (nothing traces)
    kind: str = "bare"  # bare | connscope | bcc
    per_ok: int = 0  # records (lines) per successful loopback connection
    per_failed: int = 0  # records per refused or abandoned connect
    port_cols: tuple[int, int] = (0, 0)  # bcc: whitespace columns of the two ports
    per_listener: int = 0  # records a phase's listening socket adds (tcpstates: CLOSE>LISTEN>CLOSE)
    note: str = ""


def configs(service: list[str]) -> list[Config]:
    """The five configurations, in a fixed order (the rounds rotate it)."""
    cs = str(CONNSCOPE)
    return [
        Config("bare", None),
        # connect + accept + one close per side; a refused connect is one connect record.
        Config("service", [cs, *service], "connscope", note="summaries: counts per process"),
        Config("per-connection", [cs, "trace", "--json"], "connscope", per_ok=4, per_failed=1),
        # tcplife: one line per socket that closes (both sides); a refused connect closes too.
        Config("tcplife", [SYS_PY, str(BCC_READY), "/usr/sbin/tcplife-bpfcc"], "bcc",
               per_ok=2, per_failed=1, port_cols=(3, 5)),
        # tcpstates: every state change, 5 per side (client CLOSE>SYN_SENT>ESTABLISHED>
        # FIN_WAIT1>FIN_WAIT2>CLOSE, server LISTEN>SYN_RECV>ESTABLISHED>CLOSE_WAIT>
        # LAST_ACK>CLOSE); refused: CLOSE>SYN_SENT>CLOSE.
        Config("tcpstates", [SYS_PY, str(BCC_READY), "/usr/sbin/tcpstates-bpfcc"], "bcc",
               per_ok=10, per_failed=2, port_cols=(4, 6), per_listener=2),
    ]


def _default_sigint() -> None:
    # A shell running us in the background ignores SIGINT, and an ignored
    # signal stays ignored across exec: the BCC tools would never stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _task_cpu_ns(pid: int) -> int:
    """CPU time (user + sys) of every thread of pid, in ns, from schedstat."""
    total = 0
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread just ended
    return total


def settle(cpu_s: Callable[[], float], cap_s: float, idle_share: float = 0.05, step_s: float = 0.2,
           each: Callable[[], None] | None = None) -> float:
    """Waits until a process uses < idle_share of a core over step_s (it caught
    up), at most cap_s; `cpu_s()` reads its CPU seconds, `each()` runs every
    step. Returns the seconds waited."""
    t0 = time.monotonic()
    last = cpu_s()
    while time.monotonic() - t0 < cap_s:
        time.sleep(step_s)
        if each is not None:
            each()
        now = cpu_s()
        if now - last < idle_share * step_s:
            break
        last = now
    return time.monotonic() - t0


@dataclass
class Tracer:
    """A running configuration (or none, for bare)."""

    config: Config
    tag: str
    startup_s: float = 0.0
    proc: subprocess.Popen | None = None
    out_path: Path | None = None
    err_path: Path | None = None
    peak_rss_mb: float = 0.0
    returncode: int | None = None
    _cpu_dead_ns: int = field(default=0, repr=False)

    def start(self, timeout: float = 90.0) -> "Tracer":
        """Start it and wait for its first line (connscope's agent start, a BCC header)."""
        if self.config.argv is None:
            return self
        self.out_path = Path(f"/dev/shm/csbench-{os.getpid()}-{self.tag}.out")
        self.err_path = self.out_path.with_suffix(".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.config.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=REPO, preexec_fn=_default_sigint)
        while True:
            with open(self.out_path, "rb") as f:
                if b"\n" in f.read(65536):
                    break
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                self.stop()
                raise BenchError(f"{self.config.name} did not start (rc={self.proc.returncode}): "
                                 f"{self.err_path.read_text(errors='replace')[-600:]}")
            time.sleep(0.005)
        self.startup_s = time.monotonic() - t0
        return self

    def cpu_s(self) -> float:
        """CPU seconds (user + sys, all threads) used so far."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        try:
            return _task_cpu_ns(self.proc.pid) / 1e9
        except OSError:
            return 0.0

    def sample_rss(self) -> None:
        """Remember the peak RSS (VmHWM) seen so far."""
        if self.proc is None:
            return
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        except OSError:
            pass

    def settle(self, cap_s: float, idle_share: float = 0.05, step_s: float = 0.2) -> float:
        """Wait until it uses < idle_share of a core over step_s (it caught up), at most cap_s.

        Returns the seconds waited. Bare waits one step, so phases stay alike.
        """
        if self.proc is None:
            time.sleep(step_s)
            return step_s
        return settle(self.cpu_s, cap_s, idle_share, step_s, each=self.sample_rss)

    def stop(self, timeout: float = 120.0) -> None:
        """SIGINT (both connscope and the BCC tools flush and exit on it), then wait."""
        if self.proc is None:
            return
        self.sample_rss()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode

    def cleanup(self) -> None:
        """Kill if still running; delete the output files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in (self.out_path, self.err_path):
            if p is not None:
                try:
                    p.unlink()
                except OSError:
                    pass
