#!/usr/bin/python3
"""Peers that put a connection into a known queue state (standard library only).

Run inside a namespace:
  sockstate.py stall-server --addr A --port P
      accepts one connection and reads nothing until a line on stdin, then
      reads to EOF: the connection's Recv-Q fills, then drains.
  sockstate.py stall-client --addr A --port P --bytes N
      sends N bytes (blocking while the peer's window is closed), prints
      {"event":"sent"} when all are written, closes at a line on stdin.
  sockstate.py full-server --addr A --port P --backlog B
      listens with backlog B and never accepts: the accept queue fills and
      the kernel drops further handshakes (TcpExtListenOverflows).
  sockstate.py rpc-server --addr A --port P --bytes N
  sockstate.py rpc-client --addr A --port P --bytes N --requests R [--nodelay]
      R requests of N bytes, each written in two writes, each answered with
      one reply; the client prints {"event":"done","latencies_us":[...]}.
Each prints {"event":"listening"|"connected", "pid", "sport"} first.
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def listener(args, backlog: int) -> socket.socket:
    lst = socket.socket(socket.AF_INET6 if ":" in args.addr else socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((args.addr, args.port))
    lst.listen(backlog)
    emit(event="listening", pid=os.getpid(), sport=args.port)
    return lst


def stall_server(args) -> None:
    conn, _ = listener(args, 4).accept()
    emit(event="accepted", pid=os.getpid())
    sys.stdin.readline()
    n = 0
    while chunk := conn.recv(1 << 20):
        n += len(chunk)
    emit(event="drained", bytes=n)
    conn.close()


def stall_client(args) -> None:
    sock = socket.socket(socket.AF_INET6 if ":" in args.addr else socket.AF_INET, socket.SOCK_STREAM)
    if args.keepidle:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, args.keepidle)
    if args.nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect((args.addr, args.port))
    emit(event="connected", pid=os.getpid(), sport=sock.getsockname()[1])

    def send() -> None:
        sock.sendall(b"b" * args.bytes)
        emit(event="sent")

    t = threading.Thread(target=send, daemon=True)
    t.start()
    sys.stdin.readline()
    t.join()
    sock.close()


def rpc_server(args) -> None:
    """Answers each request of two parts (--bytes in all) with one write."""
    conn, _ = listener(args, 4).accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the replies are not what is measured
    while True:
        need = args.bytes
        while need:
            chunk = conn.recv(need)
            if not chunk:
                conn.close()
                return
            need -= len(chunk)
        conn.sendall(b"r" * 64)


def rpc_client(args) -> None:
    """--requests requests, each written in two small writes, then its reply
    read; prints each request's latency in us."""
    sock = socket.socket(socket.AF_INET6 if ":" in args.addr else socket.AF_INET, socket.SOCK_STREAM)
    if args.nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect((args.addr, args.port))
    emit(event="connected", pid=os.getpid(), sport=sock.getsockname()[1])
    half = args.bytes // 2
    latencies = []
    for _ in range(args.requests):
        t0 = time.monotonic_ns()
        sock.sendall(b"h" * half)
        sock.sendall(b"b" * (args.bytes - half))
        need = 64
        while need:
            need -= len(sock.recv(need))
        latencies.append((time.monotonic_ns() - t0) // 1000)
    emit(event="done", latencies_us=latencies)
    sys.stdin.readline()
    sock.close()


def full_server(args) -> None:
    lst = listener(args, args.backlog)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    lst.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("stall-server", "stall-client", "full-server", "rpc-server", "rpc-client"))
    p.add_argument("--requests", type=int, default=1)
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--backlog", type=int, default=1)
    p.add_argument("--keepidle", type=int, default=0, help="stall-client: SO_KEEPALIVE with this TCP_KEEPIDLE")
    p.add_argument("--nodelay", action="store_true", help="stall-client: TCP_NODELAY")
    p.add_argument("--comm", default="cs-state")
    args = p.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT} if args.role == "full-server" else set())
    ctypes.CDLL(None).prctl(15, args.comm.encode()[:15], 0, 0, 0)  # PR_SET_NAME, before any socket
    {"stall-server": stall_server, "stall-client": stall_client, "full-server": full_server,
     "rpc-server": rpc_server, "rpc-client": rpc_client}[args.role](args)


if __name__ == "__main__":
    main()
