"""What the socket-health features cost: the nagle hook per write, and the
live-socket scan at many connections.

    .venv/bin/python -m bench.sockcost [--writes 200000] [--connections 10000]

1. Writes: with `connscope trace --summary` running, one loopback
   connection makes --writes small writes, with TCP_NODELAY (the hook's
   cheap exit) and without it (Nagle on: the hook reads the send state),
   and kernel.bpf_stats_enabled gives the tcp_sendmsg_locked program's run
   time per write: the kernel's own accounting.
2. Scan: --connections established loopback connections in a namespace of
   the bench's own, then the agent's scan pieces timed on them: the
   sock_diag dump with tcp_info (ports/live.py), the kernel socket map read
   that ties sockets to processes, and the whole SocketWatch.scan().
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import time

from .agents import REPO, Config, Tracer
from .profile import STATS_SYSCTL, _bpf_progs, _prog_names


def write_cost(writes: int) -> dict:
    argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "agent", "trace", "--summary", "--window", "5"]
    tracer = Tracer(Config("summary", argv, "connscope"), "sockcost")
    out = {}
    try:
        tracer.start()
        for nodelay in (True, False):
            lst = socket.socket()
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            cli = socket.create_connection(lst.getsockname())
            srv, _ = lst.accept()
            if nodelay:
                cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            srv.setblocking(False)
            before = _bpf_progs(tracer.proc.pid)
            for i in range(writes):
                cli.send(b"x" * 100)
                if i % 64 == 63:
                    try:
                        while srv.recv(1 << 20):
                            pass
                    except BlockingIOError:
                        pass
            after = _bpf_progs(tracer.proc.pid)
            names = _prog_names(tracer.proc.pid)
            for pid_, a in after.items():
                b = before.get(pid_, {"run_time_ns": 0, "run_cnt": 0})
                if names.get(pid_, "") == "tcp_sendmsg_locked":
                    d_ns, d_cnt = a["run_time_ns"] - b["run_time_ns"], a["run_cnt"] - b["run_cnt"]
                    out["nodelay" if nodelay else "nagle_on"] = {"runs": d_cnt, "ns_per_run": round(d_ns / max(1, d_cnt))}
            for s in (cli, srv, lst):
                s.close()
        tracer.stop()
    finally:
        tracer.cleanup()
    return out


def scan_cost(n: int) -> dict:
    """n established loopback connections in the agent's own namespace (the
    accepting ends held by a child process: one process may not hold 2n fds
    here), then the scan's pieces timed on them."""
    from agent.ports.live import listen_counters, listeners, live_sockets

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # accepts and holds the server ends until killed
        held = [lst.accept()[0] for _ in range(n)]
        os.write(ready_w, b"x")
        signal.pause()
        os._exit(len(held) and 0)
    socks = []
    try:
        lst.close()
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        os.read(ready_r, 1)
        out = {"connections": n, "sockets": 2 * n}
        for name, fn in (("dump_s", live_sockets), ("listeners_s", listeners), ("counters_s", listen_counters)):
            out[name] = round(min(_timed(fn) for _ in range(3)), 4)
        out["dumped"] = len(live_sockets())
        return out
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        for s in socks:
            s.close()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=200_000)
    ap.add_argument("--connections", type=int, default=10_000)
    args = ap.parse_args()
    old = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    try:
        print("writes:", write_cost(args.writes))
    finally:
        STATS_SYSCTL.write_text(old)
    print("scan:", scan_cost(args.connections))


if __name__ == "__main__":
    main()
