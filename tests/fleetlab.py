"""Hosts for fleet tests: real agents, each in its own network and UTS namespace.

A host is the client namespace of a NetPair (tests/netlab.py) whose UTS
namespace carries its own host name; its agent runs there and reaches the
test's Kafka broker (Tansu or the librdkafka mock, listening on the root
namespace's loopback) through a forwarder: a listening socket on the
host's own 127.0.0.1 at the broker's port, made by a thread that entered
the host's network namespace (setns(2) is per thread), whose connections
are relayed to the broker from the root namespace. So the broker's
advertised address (127.0.0.1:PORT) works inside every host.

Every host's server namespace also holds DB_ADDR, routed on the veth with
nothing listening at DB_PORT: a destination every host is refused by.

Two agents on one kernel see each other's connections, so each agent only
counts its host's client command (--comm).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import sys
import threading
import time

from netlab import NetPair, json_lines, wait_json_line, wait_until  # noqa: F401  (the fleet tests' wait)
from .agentrun import REPO

DB_ADDR = "169.254.250.5"
DB_PORT = 5432
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: str, fn):
    """fn() on a thread that entered network namespace `ns`; its result (sockets keep their namespace)."""
    out: dict = {}

    def work():
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class Forwarder:
    """127.0.0.1:port inside `ns` -> 127.0.0.1:port of the root namespace."""

    def __init__(self, ns: str, port: int):
        self.ns = ns
        self.port = port
        # the broker's replies are lost on the way (what it was sent, it stores): a
        # producer times out on batches the broker has, and sends them again
        self.drop_replies = False
        self._closed = False
        self._socks: list[socket.socket] = []
        self.resume()

    def resume(self) -> None:
        """Listens (again): the host reaches the broker."""
        def listen():
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(64)
            return s

        self.listener = in_netns(self.ns, listen)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def pause(self) -> None:
        """A network partition: open connections are reset and new ones refused."""
        self._drop()

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                inner, _ = listener.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                outer.settimeout(None)
            except OSError:
                inner.close()  # the broker is down: the client sees a closed connection
                continue
            self._socks += [inner, outer]
            threading.Thread(target=_pump, args=(inner, outer, lambda: False), daemon=True).start()
            threading.Thread(target=_pump, args=(outer, inner, lambda: self.drop_replies), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        socks, self._socks = [self.listener, *self._socks], []
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _pump(src: socket.socket, dst: socket.socket, discard) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if not discard():
                dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FleetHost:
    """One host: a NetPair, its host name, a forwarder to the broker and an agent."""

    def __init__(self, name: str, broker_port: int, peer_cmd):
        self.name = name
        self.comm = f"cs-{name[-6:]}"  # the client command this host's agent counts
        self.peer_cmd = peer_cmd
        self.pair = NetPair()
        self.forwarder = None
        self.agent = None
        try:
            self.pair.run(self.pair.server_ns, ["ip", "addr", "add", f"{DB_ADDR}/32", "dev", "cs0"])
            self.pair.run(self.pair.client_ns, ["ip", "route", "add", DB_ADDR, "dev", "cs0"])
            self.forwarder = Forwarder(self.pair.client_ns, broker_port)
        except BaseException:
            self.close()
            raise

    def start_agent(self, bootstrap: str, topic: str, state_dir: str, *extra: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "agent", "run", "--output", "kafka",
                "--kafka-bootstrap", bootstrap, "--kafka-topic", topic, "--kafka-linger-ms", "5",
                "--state-dir", state_dir, "--window", "1", "--status-interval", "0", "--comm", self.comm, *extra]
        script = f"hostname {self.name} && cd {REPO} && exec " + " ".join(_quote(a) for a in argv)
        self.err_path = os.path.join(state_dir, "..", f"{self.name}.stderr")
        os.makedirs(state_dir, exist_ok=True)
        # nsenter, not `ip netns exec`: that one mounts a sysfs of its own, without tracefs under it
        self.agent = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{self.pair.client_ns}", "unshare", "--uts", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.err_path, "wb"),
            start_new_session=True)
        self.pair._procs.append(self.agent)  # killed and reaped by the pair's close()
        return self.agent

    def stderr(self) -> str:
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")
        except (OSError, AttributeError):
            return ""

    def server(self, port: int):
        """A listener on the server side (mode close: it closes after the client)."""
        proc = self.pair.popen(self.pair.server_ns, self.peer_cmd(
            "server", "--addr", self.pair.server_v4, "--port", port, "--mode", "close", "--comm", "cs-fleet-srv"))
        wait_json_line(proc, lambda j: j["event"] == "listening", timeout=10)
        threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
        return proc

    def client(self, addr: str, port: int, count: int, *extra) -> list[dict]:
        cp = self.pair.run(self.pair.client_ns, self.peer_cmd(
            "client", "--addr", addr, "--port", port, "--count", count, "--comm", self.comm, *extra), timeout=120)
        return [j for j in json_lines(cp.stdout) if j["event"] == "connect"]

    def burst(self, port: int, count: int) -> dict:
        cp = self.pair.run(self.pair.client_ns, self.peer_cmd(
            "burst", "--addr", self.pair.server_v4, "--port", port, "--count", count, "--comm", self.comm),
            timeout=300)
        return json_lines(cp.stdout)[-1]

    def stop_agent(self, timeout: float = 60) -> int:
        proc = self.agent
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else 0
        proc.terminate()  # nsenter, unshare and sh each exec the next: this is the agent
        return proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.close()
        self.pair.close()


def _quote(a: str) -> str:
    import shlex
    return shlex.quote(str(a))
