#!/usr/bin/python3
"""One connection with a known exchange, and TCP_INFO read before it closes
(standard library only): ground truth for connscope's close records.

Run inside a namespace:
  exchange.py server --addr A --port P --expect N --reply M [options]
  exchange.py client --addr A --port P --send N --expect M [options]
options: --keepalive  --keepidle S  --keepintvl S  --nodelay  --abort (close with SO_LINGER 0)
         --comm NAME

Each side sends its bytes, reads the peer's, waits until everything it sent
is acknowledged (tcpi_unacked 0), then prints TCP_INFO as a JSON line:
  {"event":"info","pid","sport","dport","bytes_acked","bytes_received",
   "rtt_us","min_rtt_us","snd_mss"}
Nothing flows after that until the client reads a line on stdin: then it
closes (--abort: with an RST) and the server closes on EOF or the reset.
Both print {"event":"closed"} and exit.
"""

import argparse
import ctypes
import json
import os
import socket
import struct
import sys
import time

TCP_INFO = 11
# struct tcp_info (uapi/linux/tcp.h) offsets of the fields read here
_INFO = {"unacked": (24, "I"), "snd_mss": (16, "I"), "rtt_us": (68, "I"), "bytes_acked": (120, "Q"),
         "bytes_received": (128, "Q"), "min_rtt_us": (148, "I")}


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def tcp_info(sock: socket.socket) -> dict:
    raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 232)
    return {k: struct.unpack_from("<" + fmt, raw, off)[0] for k, (off, fmt) in _INFO.items()}


def options(sock: socket.socket, args) -> None:
    if args.keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if args.keepidle:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, args.keepidle)
    if args.keepintvl:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, args.keepintvl)
    if args.nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def recv_exactly(sock: socket.socket, n: int) -> None:
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise SystemExit(f"peer closed with {n} bytes still expected")
        n -= len(chunk)


def settle_and_report(sock: socket.socket) -> None:
    deadline = time.monotonic() + 20
    while tcp_info(sock)["unacked"] and time.monotonic() < deadline:
        time.sleep(0.01)
    info = tcp_info(sock)
    del info["unacked"]
    local, peer = sock.getsockname(), sock.getpeername()
    emit(event="info", pid=os.getpid(), sport=local[1], dport=peer[1], **info)


def server(args) -> None:
    fam = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
    lst = socket.socket(fam, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((args.addr, args.port))
    lst.listen(4)
    emit(event="listening")
    conn, _ = lst.accept()
    lst.close()
    options(conn, args)
    recv_exactly(conn, args.expect)
    conn.sendall(b"r" * args.reply)
    settle_and_report(conn)
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        pass
    conn.close()
    emit(event="closed")


def client(args) -> None:
    fam = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    options(sock, args)
    sock.connect((args.addr, args.port))
    sock.sendall(b"s" * args.send)
    recv_exactly(sock, args.expect)
    settle_and_report(sock)
    sys.stdin.readline()
    if args.abort:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    emit(event="closed")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("server", "client"))
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--send", type=int, default=0)
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--reply", type=int, default=0)
    p.add_argument("--keepalive", action="store_true")
    p.add_argument("--keepidle", type=int, default=0)
    p.add_argument("--keepintvl", type=int, default=0)
    p.add_argument("--nodelay", action="store_true")
    p.add_argument("--abort", action="store_true")
    p.add_argument("--comm", default="cs-exch")
    args = p.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, args.comm.encode()[:15], 0, 0, 0)  # PR_SET_NAME, before any socket
    (server if args.role == "server" else client)(args)


if __name__ == "__main__":
    main()
