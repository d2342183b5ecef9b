#!/usr/bin/python3
"""Traffic peer for connscope's real-kernel tests (standard library only).

Run inside a namespace:  ip netns exec NS /usr/bin/python3 tests/tools/peer.py SUBCOMMAND ...

  server --addr A --port P [--mode close|reset|hold|echo] [--count N]
  client --addr A --port P [--count N] [--send BYTES] [--nonblocking] [--timeout S]
         [--close-first] [--half-close] [--hold S] [--interval S] [--syncnt N]
  burst  --addr A --port P --count N

Every subcommand takes --comm NAME (default cs-peer): the process name is set
with prctl(PR_SET_NAME) before any socket exists, so the kernel's comm for all
of its sockets is known. Output is one JSON object per line, flushed at once.
Everything runs in the main thread, so tid == pid for every socket call.

Lines (IPv6 when --addr contains ':'):
  {"event":"listening","pid","addr","port"}
  {"event":"accepted","pid","laddr","lport","raddr","rport"}
  {"event":"closed","pid","lport","raddr","rport","how":"close"|"reset"}
  {"event":"connect","pid","tid","sport","saddr","daddr","dport","errno","error",
   "latency_us","gave_up", and once connected: "sent","recv_bytes","peer_eof",
   "close_errno","close_error"}
  {"event":"burst","pid","ok","failed","errors":{name:count},"sports" (count <= 1000)}

Server modes: close = read until EOF (or 1 s) then close; reset = after the
first bytes (or 5 s) close with SO_LINGER 0 (RST); hold = never close (until
SIGTERM); echo = echo until EOF then close. --count N: accept N, then close
the listener and exit when those are done (hold: at SIGTERM).

Client: blocking connect() bounded by SO_SNDTIMEO = --timeout (on expiry the
kernel returns EINPROGRESS, gave_up=true); --nonblocking: connect -> EINPROGRESS,
poll for POLLOUT, then SO_ERROR (our own deadline: ETIMEDOUT, gave_up=true).
sport/saddr come from getsockname(): after a failed blocking connect the port
used is still reported (saddr reads as 0.0.0.0 / ::); 0 if none was bound
(ENETUNREACH, EADDRNOTAVAIL). errno is connect()'s; errors after it (e.g.
ECONNRESET from a peer's RST while waiting for its EOF) go to close_errno.
Connects that fail still exit 0: tests assert the printed errno.
"""

import argparse
import ctypes
import errno
import json
import os
import select
import selectors
import signal
import socket
import struct
import sys
import threading
import time

PR_SET_NAME = 15


def set_comm(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def errname(err: int):
    return errno.errorcode.get(err) if err else None


def on_sigterm(signum, frame):
    sys.exit(0)


# -- server ---------------------------------------------------------------

def server(args) -> None:
    lsock = socket.socket(family(args.addr), socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.addr, args.port))
    lsock.listen(4096)
    emit(event="listening", pid=os.getpid(), addr=args.addr, port=lsock.getsockname()[1])

    sel = selectors.DefaultSelector()  # epoll: no FD_SETSIZE limit
    sel.register(lsock, selectors.EVENT_READ)
    conns = {}  # open connection -> deadline (None: no deadline)
    held = []  # hold mode: connections whose peer closed, kept open until SIGTERM
    # How long a connection may stay: close = EOF or 1 s; reset = first bytes or 5 s.
    limit = {"close": 1.0, "reset": 5.0}.get(args.mode)
    accepted = 0
    while lsock is not None or conns or args.mode == "hold":
        deadlines = [d for d in conns.values() if d is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for key, _ in sel.select(timeout):
            sock = key.fileobj
            if sock is lsock:
                conn, peer = lsock.accept()
                accepted += 1
                local = conn.getsockname()
                emit(event="accepted", pid=os.getpid(), laddr=local[0], lport=local[1],
                     raddr=peer[0], rport=peer[1])
                conns[conn] = None if limit is None else time.monotonic() + limit
                sel.register(conn, selectors.EVENT_READ)
                if args.count and accepted >= args.count:
                    sel.unregister(lsock)
                    lsock.close()
                    lsock = None
                continue
            try:
                data = sock.recv(65536)
                if args.mode == "echo" and data:
                    sock.sendall(data)
            except OSError:
                data = b""
            if args.mode == "hold":
                if not data:  # peer closed: keep our end open, stop polling it
                    sel.unregister(sock)
                    del conns[sock]
                    held.append(sock)
            elif args.mode == "reset" or not data:
                finish(sel, conns, sock, args.mode)
        now = time.monotonic()
        for sock, deadline in list(conns.items()):
            if deadline is not None and now >= deadline:
                finish(sel, conns, sock, args.mode)


def finish(sel, conns, sock, mode) -> None:
    sel.unregister(sock)
    del conns[sock]
    try:
        local, remote = sock.getsockname(), sock.getpeername()
    except OSError:
        local, remote = ("", 0), ("", 0)
    if mode == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    emit(event="closed", pid=os.getpid(), lport=local[1], raddr=remote[0], rport=remote[1],
         how="reset" if mode == "reset" else "close")


# -- client ---------------------------------------------------------------

def connect_once(args) -> dict:
    sock = socket.socket(family(args.addr), socket.SOCK_STREAM)
    if args.syncnt:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, args.syncnt)
    sport, saddr, err, gave_up = 0, None, 0, False
    t0 = time.monotonic()
    if args.nonblocking:
        sock.setblocking(False)
        err = sock.connect_ex((args.addr, args.port))
        if err == errno.EINPROGRESS:
            saddr, sport = sock.getsockname()[:2]  # bound now, even if the attempt fails
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            if poller.poll(args.timeout * 1000):
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            else:  # our own deadline; the kernel is still trying
                err, gave_up = errno.ETIMEDOUT, True
        sock.setblocking(True)
    else:
        # A really blocking connect() (Python's settimeout() would make it
        # non-blocking underneath). SO_SNDTIMEO bounds it: on expiry the kernel
        # returns EINPROGRESS, which is reported as such (with gave_up).
        tv = struct.pack("ll", int(args.timeout), int((args.timeout % 1) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        try:
            sock.connect((args.addr, args.port))
        except OSError as e:
            err = e.errno
            gave_up = err == errno.EINPROGRESS
    latency_us = int((time.monotonic() - t0) * 1e6)
    name = sock.getsockname()
    if name[1]:
        saddr, sport = name[:2]
    rec = dict(event="connect", pid=os.getpid(), tid=threading.get_native_id(),
               sport=sport, saddr=saddr, daddr=args.addr, dport=args.port,
               errno=err, error=errname(err), latency_us=latency_us, gave_up=gave_up)
    if err == 0:
        rec.update(after_connect(sock, args))
    sock.close()
    return rec


def after_connect(sock, args) -> dict:
    """Send, hold, then wait for the peer's EOF unless --close-first.

    Errors here (e.g. ECONNRESET from a peer's RST) go to close_errno."""
    out = {"sent": 0, "recv_bytes": 0, "peer_eof": False, "close_errno": 0, "close_error": None}
    try:
        if args.send:
            sock.sendall(b"x" * args.send)
            out["sent"] = args.send
        if args.half_close:
            sock.shutdown(socket.SHUT_WR)  # our FIN now; keep reading (echo mode then ends)
        if args.hold:
            time.sleep(args.hold)
        if not args.close_first:
            deadline = time.monotonic() + args.timeout
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not poller.poll(left * 1000):
                    break
                data = sock.recv(65536)
                if not data:
                    out["peer_eof"] = True
                    break
                out["recv_bytes"] += len(data)
    except OSError as e:
        out["close_errno"], out["close_error"] = e.errno, errname(e.errno)
    return out


def client(args) -> None:
    for i in range(args.count):
        if i and args.interval:
            time.sleep(args.interval)
        emit(**connect_once(args))


def burst(args) -> None:
    ok, failed, sports, errors = 0, 0, [], {}
    dst = (args.addr, args.port)
    for _ in range(args.count):
        sock = socket.socket(family(args.addr), socket.SOCK_STREAM)
        try:
            sock.connect(dst)
            ok += 1
            if args.count <= 1000:
                sports.append(sock.getsockname()[1])
        except OSError as e:
            failed += 1
            name = errname(e.errno) or str(e.errno)
            errors[name] = errors.get(name, 0) + 1
        sock.close()
    rec = dict(event="burst", pid=os.getpid(), ok=ok, failed=failed, errors=errors)
    if args.count <= 1000:
        rec["sports"] = sports
    emit(**rec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("server", "client", "burst"):
        p = sub.add_parser(name)
        p.add_argument("--addr", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--comm", default="cs-peer", help="process name (max 15 chars)")
        if name == "server":
            p.add_argument("--mode", choices=("close", "reset", "hold", "echo"), default="close")
            p.add_argument("--count", type=int, default=0, help="accept N connections then stop (0: forever)")
        elif name == "client":
            p.add_argument("--count", type=int, default=1)
            p.add_argument("--send", type=int, default=0, metavar="BYTES")
            p.add_argument("--nonblocking", action="store_true")
            p.add_argument("--timeout", type=float, default=10.0)
            p.add_argument("--close-first", action="store_true")
            p.add_argument("--half-close", action="store_true", help="shutdown(SHUT_WR) after sending")
            p.add_argument("--hold", type=float, default=0.0)
            p.add_argument("--interval", type=float, default=0.0)
            p.add_argument("--syncnt", type=int, default=0, help="TCP_SYNCNT (SYN retransmits before ETIMEDOUT)")
        else:
            p.add_argument("--count", type=int, required=True)
    args = ap.parse_args(argv)
    if len(args.comm.encode()) > 15:
        ap.error("--comm is at most 15 bytes")
    set_comm(args.comm)  # before any socket
    signal.signal(signal.SIGTERM, on_sigterm)
    {"server": server, "client": client, "burst": burst}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
