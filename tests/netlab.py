"""A small lab for real-kernel network tests: two namespaces joined by a veth.

    with NetPair() as lab:
        srv = lab.popen(lab.server_ns, peer_cmd("server", "--addr", lab.server_v4, "--port", "24000"))
        wait_json_line(srv, lambda o: o["event"] == "listening", 5)
        out = lab.run(lab.client_ns, peer_cmd("client", "--addr", lab.server_v4, "--port", "24000"))

Traffic never leaves the two namespaces: every address is 169.254.N.x/24 or
fd00:N::x/64 on the veth, and there is no default route, so a connect() to
`unrouted_v4` / `unrouted_v6` fails with ENETUNREACH before any packet is built.

Namespaces are named cs<6 hex><c|s>. A marker file in MARKER_DIR records the
owning pid, so `sweep_stale()` removes only pairs whose owner is gone and leaves
a concurrently running test session alone.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import re
import secrets
import select
import signal
import subprocess
import time
from typing import Any, Callable

NS_RE = re.compile(r"^cs[0-9a-f]{6}[cs]$")
MARKER_DIR = "/run/connscope-netlab"
VETH = "cs0"  # the veth end's name inside each namespace

_live: "set[NetPair]" = set()  # open pairs; a strong set so atexit closes even dropped ones


class NetLabError(subprocess.CalledProcessError):
    """A failed command, with its stderr in the message."""

    def __str__(self) -> str:
        err = self.stderr if isinstance(self.stderr, str) else (self.stderr or b"").decode(errors="replace")
        return f"{super().__str__()}\nstderr: {err.strip()}"


def _cmd(argv: list[str], check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and cp.returncode != 0:
        raise NetLabError(cp.returncode, argv, cp.stdout, cp.stderr)
    return cp


def list_netns() -> list[str]:
    """Names from `ip netns list` (its lines look like 'name (id: 3)')."""
    out = _cmd(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_ns_pids(ns: str) -> None:
    """SIGKILL every process still inside namespace ns (all of them are ours)."""
    out = _cmd(["ip", "netns", "pids", ns], check=False).stdout
    for tok in out.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _delete_ns(ns: str) -> None:
    _kill_ns_pids(ns)
    _cmd(["ip", "netns", "del", ns], check=False)


def _start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (start time in ticks): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(tag: str) -> bool:
    """Is the process that made pair `tag` still running (and, if it is us, still open)?"""
    try:
        with open(os.path.join(MARKER_DIR, tag)) as f:
            owner, started = f.read().split()[:2]
        owner_pid = int(owner)
    except (OSError, ValueError):
        return False
    if owner_pid == os.getpid():
        return any(p._tag == tag for p in _live)
    return _start_time(owner_pid) == started


def sweep_stale() -> list[str]:
    """Delete cs??????[cs] namespaces left by an earlier run whose owner is dead.

    Returns the names deleted. Namespaces without a marker file are stale by
    definition (a NetPair writes its marker before creating them).
    """
    removed = []
    for ns in list_netns():
        if NS_RE.match(ns) and not _owner_alive(ns[2:8]):
            _delete_ns(ns)
            removed.append(ns)
    if os.path.isdir(MARKER_DIR):
        for tag in os.listdir(MARKER_DIR):
            if not _owner_alive(tag):
                try:
                    os.unlink(os.path.join(MARKER_DIR, tag))
                except OSError:
                    pass
    return removed


def pick_port() -> int:
    """A random TCP port in 20000..29999 (namespaces are fresh, so no clash)."""
    return random.randint(20000, 29999)


class NetPair:
    """Client and server namespaces joined by a veth, IPv4 and IPv6 ready."""

    def __init__(self) -> None:
        self._tag = secrets.token_hex(3)
        self._procs: list[subprocess.Popen] = []
        self._closed = False
        self.client_ns = f"cs{self._tag}c"
        self.server_ns = f"cs{self._tag}s"
        self.net = random.randint(1, 254)
        other = random.choice([m for m in range(1, 255) if m != self.net])
        self.client_v4 = f"169.254.{self.net}.1"
        self.server_v4 = f"169.254.{self.net}.2"
        self.client_v6 = f"fd00:{self.net}::1"
        self.server_v6 = f"fd00:{self.net}::2"
        # Not on-link and no route: connect() fails with ENETUNREACH, no packet sent.
        self.unrouted_v4 = f"169.254.{other}.9"
        self.unrouted_v6 = f"fd00:{other}::9"
        _live.add(self)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------
    def _setup(self) -> None:
        os.makedirs(MARKER_DIR, exist_ok=True)
        with open(os.path.join(MARKER_DIR, self._tag), "w") as f:
            f.write(f"{os.getpid()} {_start_time(os.getpid())}\n")
        for ns in (self.client_ns, self.server_ns):
            _cmd(["ip", "netns", "add", ns])
            # No DAD at all, so the link-local address is not tentative for ~2 s
            # either (new devices copy conf/default).
            _cmd(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
        # Both ends are created directly inside the namespaces: no name in the root ns.
        _cmd(["ip", "link", "add", VETH, "netns", self.client_ns,
              "type", "veth", "peer", "name", VETH, "netns", self.server_ns])
        for ns, v4, v6 in ((self.client_ns, self.client_v4, self.client_v6),
                           (self.server_ns, self.server_v4, self.server_v6)):
            _cmd(["ip", "-n", ns, "link", "set", "lo", "up"])
            _cmd(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", VETH])
            _cmd(["ip", "-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", VETH, "nodad"])
            _cmd(["ip", "-n", ns, "link", "set", VETH, "up"])
        deadline = time.monotonic() + 10
        for ns in (self.client_ns, self.server_ns):
            while True:
                link = _cmd(["ip", "-n", ns, "-o", "link", "show", VETH]).stdout
                tent = _cmd(["ip", "-n", ns, "-6", "-o", "addr", "show", "dev", VETH, "tentative"]).stdout
                if "state UP" in link and not tent.strip():
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ns}: veth not ready: {link!r} tentative={tent!r}")
                time.sleep(0.02)

    # -- commands inside a namespace ---------------------------------------
    def run(self, ns: str, argv: list[str], check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run argv inside ns (`ip netns exec`), text output captured."""
        return _cmd(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=input)

    def popen(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen:
        """Start argv inside ns; stdout/stderr are pipes (bytes) unless given.

        `ip netns exec` execs the command without forking, so proc.pid is the
        command's own pid. The process is killed and reaped by close().
        """
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self._procs.append(proc)
        return proc

    def nft(self, ns: str, script: str) -> None:
        """Load an nft script inside ns (`nft -f -`); its tables die with the ns."""
        self.run(ns, ["nft", "-f", "-"], input=script)

    def sysctl(self, ns: str, key: str, value: Any) -> None:
        """Set a sysctl inside ns (net.* keys are per namespace)."""
        self.run(ns, ["sysctl", "-q", "-w", f"{key}={value}"])

    # -- teardown -----------------------------------------------------------
    def close(self) -> None:
        """Kill tracked processes, delete both namespaces. Idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            _stop(proc)
        for ns in (self.client_ns, self.server_ns):
            try:
                _delete_ns(ns)
            except Exception:
                pass
        try:
            os.unlink(os.path.join(MARKER_DIR, self._tag))
        except OSError:
            pass
        _live.discard(self)

    def __enter__(self) -> "NetPair":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetPair({self.client_ns}/{self.server_ns}, v4 {self.client_v4}->{self.server_v4})"


def _stop(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM the process group, SIGKILL after `grace`, reap, close pipes."""
    try:
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    try:
                        proc.send_signal(sig)
                    except ProcessLookupError:
                        pass
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                try:
                    f.close()
                except Exception:
                    pass
    except Exception:
        pass


@atexit.register
def _close_all() -> None:
    for pair in list(_live):
        pair.close()


# -- reading a peer's JSON lines -------------------------------------------

def _state(proc: subprocess.Popen) -> dict:
    st = getattr(proc, "_netlab", None)
    if st is None:
        st = {"buf": b"", "pending": [], "seen": [], "eof": False}
        proc._netlab = st  # type: ignore[attr-defined]
    return st


def _pump(proc: subprocess.Popen, timeout: float) -> None:
    """Read what stdout has (waiting at most timeout) into the pending lines."""
    st = _state(proc)
    if st["eof"]:
        return
    fd = proc.stdout.fileno()
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not ready:
        return
    chunk = os.read(fd, 65536)
    if not chunk:
        st["eof"] = True
        chunk = b"\n"
    st["buf"] += chunk
    *lines, st["buf"] = st["buf"].split(b"\n")
    for raw in lines:
        text = raw.decode(errors="replace").strip()
        if not text:
            continue
        st["seen"].append(text)
        try:
            st["pending"].append(json.loads(text))
        except ValueError:
            pass


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """predicate()'s first true value, polling; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_json_line(proc: subprocess.Popen, predicate: Callable[[dict], bool], timeout: float) -> dict:
    """Return the first not-yet-returned JSON line of proc's stdout matching predicate.

    Lines read but not matched stay available to later calls. Raises
    AssertionError listing every line seen (and stderr if the process died).
    """
    st = _state(proc)
    deadline = time.monotonic() + timeout
    while True:
        for i, obj in enumerate(st["pending"]):
            try:
                ok = predicate(obj)
            except (KeyError, TypeError):
                ok = False
            if ok:
                del st["pending"][i]
                return obj
        left = deadline - time.monotonic()
        if st["eof"] or left <= 0:
            break
        _pump(proc, min(left, 0.5))
    err = ""
    if proc.poll() is not None and proc.stderr is not None:
        try:
            err = proc.stderr.read()
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
        except Exception:
            pass
    raise AssertionError(
        f"no matching JSON line within {timeout}s (eof={st['eof']}, rc={proc.poll()}); "
        f"seen: {st['seen']!r}; stderr: {err.strip()!r}")


def read_json_lines(proc: subprocess.Popen, timeout: float) -> list[dict]:
    """Wait for proc to close its stdout (and exit); return its not-yet-returned JSON lines."""
    st = _state(proc)
    deadline = time.monotonic() + timeout
    while not st["eof"]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"stdout still open after {timeout}s; seen: {st['seen']!r}")
        _pump(proc, min(left, 0.5))
    proc.wait(max(0.1, deadline - time.monotonic()))
    out, st["pending"] = st["pending"], []
    return out


def json_lines(text: str) -> list[dict]:
    """Parse the JSON lines of a finished command's stdout (e.g. NetPair.run())."""
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
