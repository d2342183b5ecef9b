"""Build and run the churn generator (bench/churn.c) inside the bench's namespaces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "churn.c"
BINARY = HERE / "out" / "cschurn"  # bench/out/ is git-ignored


class BenchError(RuntimeError):
    """Something the bench needs is missing or broke; the message says what to do."""


def build() -> Path:
    """Compile cschurn when the source is newer than the binary; returns its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (fix: apt-get install gcc libc6-dev, or run bench/run.sh)")
    BINARY.parent.mkdir(exist_ok=True)
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cp = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(BINARY), str(SOURCE)],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        raise BenchError(f"compiling {SOURCE.name} failed:\n{cp.stderr.strip()}")
    return BINARY


@dataclass
class Load:
    """One generator run: what to do, where, how fast, how long."""

    mode: str  # loop | refused | client (with a server started separately)
    port: int
    seconds: float
    rate: float = 0.0  # total connections per second; 0 = as fast as it goes
    threads: int = 1
    dests: int = 8
    addr: str = "127.0.0.1"

    def argv(self) -> list[str]:
        """The generator's command line."""
        return [str(BINARY), self.mode, "--port", str(self.port), "--addr", self.addr,
                "--threads", str(self.threads), "--rate", str(self.rate),
                "--duration", str(self.seconds), "--dests", str(self.dests)]


def _reap(proc, timeout: float) -> tuple[bytes, bytes, float]:
    """Read proc's output to its end and reap it with wait4: (stdout, stderr, its CPU seconds)."""
    def kill() -> None:
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        out, err = proc.stdout.read(), proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return out, err, usage.ru_utime + usage.ru_stime


def run(pair, ns: str, load: Load) -> dict:
    """Run the generator to its end inside `ns`; returns its JSON result, pid and CPU seconds."""
    proc = pair.popen(ns, load.argv())
    out, err, cpu = _reap(proc, load.seconds + 30)
    if proc.returncode < 0:
        raise BenchError(f"generator {load.mode} on port {load.port} did not finish: {err.decode()[-400:]}")
    if proc.returncode != 0:
        raise BenchError(f"generator {load.mode} on port {load.port} failed ({proc.returncode}): "
                         f"{err.decode()[-400:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["pid"] = proc.pid
    result["cpu_s"] = cpu
    return result


def start_server(pair, ns: str, addr: str, port: int, seconds: float, threads: int = 8):
    """Start a server-only generator; returns the process once it listens."""
    proc = pair.popen(ns, [str(BINARY), "server", "--addr", addr, "--port", str(port),
                           "--threads", str(threads), "--duration", str(seconds)])
    line = proc.stdout.readline().decode()
    if '"listening"' not in line:
        proc.kill()
        raise BenchError(f"generator server on {addr}:{port} did not start: {line!r} "
                         f"{proc.stderr.read().decode()[-400:]}")
    return proc


def finish_server(proc) -> dict:
    """Stop a server started by start_server (SIGTERM); returns its JSON result plus its pid."""
    proc.terminate()
    out, _, cpu = _reap(proc, 30)
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["pid"] = proc.pid
    result["cpu_s"] = cpu
    return result
