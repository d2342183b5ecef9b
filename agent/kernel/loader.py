"""Compile, load and attach the eBPF programs; poll their records.

With aggmaps.py (which calls libbcc's batch map calls, lazily), the only
module that imports bcc. It walks the attach table (hooks.py):
probes pick each hook's method, the C is compiled once with the choices as
-D integers, and a method the kernel still refuses at load is marked
failed and replaced by its next fallback before compiling again.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..decode import ddbins, layout
from ..decode.events import RECORD, ConnEvent, MalformedRecord, decode, from_fields
from ..errors import ConnscopeError, KernelFeatureError
from . import culprit, features, privileges, ringbuf, sock_fields
from .aggmaps import AggMaps, Knobs
from .btf import BTF
from .hooks import HOOKS, OFF, SOURCES, Hook, Method

try:  # Debian's python3-bpfcc; the PyPI package named "bcc" is not BCC
    from bcc import BPF
except ImportError:  # pragma: no cover - reported by require_bcc()
    BPF = None


def bpf_dir() -> Path:
    """Where the C lives: $CONNSCOPE_BPF_DIR, the source tree, or the install."""
    env = os.environ.get("CONNSCOPE_BPF_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "bpf", Path(sys.prefix) / "share/connscope/bpf"]
    for c in candidates:
        if (c / "connscope.h").exists():
            return c
    raise ConnscopeError("eBPF sources (connscope.h) not found", "set CONNSCOPE_BPF_DIR to the repo's bpf/ folder")


@dataclass
class HookStatus:
    hook: Hook
    method: Method | None = None
    tried: list[tuple[str, str]] = field(default_factory=list)  # (method, why not)
    off: bool = False  # turned off by agent.force_hooks (HOOK=off)

    @property
    def state(self) -> str:
        return "active" if self.method else "off" if self.off else "missing"

    def as_dict(self) -> dict:
        return {
            "method": self.method.name if self.method else None,
            "target": self.method.target if self.method else None,
            "state": self.state,
            "required": self.hook.required,
            "fallbacks_skipped": [f"{m}: {why}" for m, why in self.tried],
            **({"limits": limits} if (limits := self.limits()) else {}),
        }

    def limits(self) -> dict[str, str]:
        """What the active method cannot give on this kernel, and why."""
        return self.method.limits() if self.method and self.method.limits else {}


@dataclass
class LoadOptions:
    ringbuf_pages: int = 2048  # 8 MiB; power of two
    perf_pages: int = 256  # per CPU
    force: dict[str, str] = field(default_factory=dict)  # hook name -> method name
    strict: bool = False
    max_socks: int = 65536
    aggregate: bool = False  # window counts in the kernel (bpf/aggregate.c), for summaries
    ring_tick_ms: int = 50  # longest a record waits in the ring buffer (bpf/emit.c)
    ring_callbacks: bool = False  # libbpf's callback per record instead of the batch reader (A/B, tests)


def require_bcc() -> None:
    if BPF is None:
        raise ConnscopeError(
            "the BCC Python module (import bcc) is missing",
            "run scripts/setup.sh, or use a venv made from /usr/bin/python3 --system-site-packages "
            "with Debian's python3-bpfcc (never the PyPI package 'bcc')",
        )


def choose(statuses: dict[str, HookStatus]) -> None:
    """Picks, per hook, the first method whose probe passes and that has not failed."""
    for st in statuses.values():
        failed = {m for m, _ in st.tried}
        st.method = None
        for m in st.hook.methods:
            if m.name in failed:
                continue
            probe = m.probe()
            if probe:
                st.method = m
                break
            st.tried.append((m.name, probe.reason))
            failed.add(m.name)


@contextmanager
def _stderr_captured():
    """libbcc and clang write diagnostics to fd 2; keep them for the error line."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        box: list[str] = []
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box.append(tmp.read().decode(errors="replace"))


def _first_error(diagnostics: str) -> str:
    for line in diagnostics.splitlines():
        if "error:" in line:
            return line.strip()
    return ""


class Tracer:
    """Loaded and attached programs, and the records they emit."""

    def __init__(self, opts: LoadOptions | None = None):
        require_bcc()
        privileges.require_bpf()
        self.opts = opts or LoadOptions()
        self.statuses = {h.name: HookStatus(h) for h in HOOKS}
        for name, method in self.opts.force.items():
            st = self.statuses[name]
            st.tried += [(m.name, f"skipped: --force {name}={method}") for m in st.hook.methods if m.name != method]
            st.off = method == OFF
        self.pending: list[ConnEvent] = []
        self.malformed = 0
        self.perf_lost = 0
        self._links: list[int] = []  # raw tracepoint links of the backup programs
        self._ring: ringbuf.RingReader | None = None
        self.reader: dict[str, str] = {}  # how records are read, and why so (the start record)
        self.bpf = self._load()
        BTF.forget()
        _release_compiler_memory()
        self._counters = self.bpf["counters"]
        self.knobs = Knobs(self.bpf["knobs"])
        self.aggregates = (AggMaps(self.bpf, self.knobs, ddbins.table(ddbins.RELATIVE_ACCURACY))
                           if self.opts.aggregate else None)
        self._open_buffer()

    # --- loading -------------------------------------------------------
    def _cflags(self) -> list[str]:
        flags = [f"-I{bpf_dir()}", f"-DRINGBUF_PAGES={int(self.opts.ringbuf_pages)}",
                 f"-DMAX_SOCKS={int(self.opts.max_socks)}", f"-DAGGREGATE={int(self.opts.aggregate)}"]
        flags += [f"-D{k}={int(v)}" for k, v in sock_fields.cflags().items()]
        for st in self.statuses.values():
            defines = {k: 0 for m in st.hook.methods for k in m.cflags}
            if st.method:
                defines.update(st.method.cflags)
            flags += [f"-D{k}={int(v)}" for k, v in defines.items()]
        return flags

    def _sources(self) -> dict[str, str]:
        """bpf/'s files in compile order, by name."""
        d = bpf_dir()
        return {name: (d / name).read_text() for name in SOURCES}

    @staticmethod
    def _text(sources: dict[str, str]) -> str:
        return "".join(culprit.line_markers(name, text) for name, text in sources.items())

    def _load(self):
        # Each failure moves one hook to its next method, so the number of
        # methods bounds the attempts.
        for _attempt in range(sum(len(h.methods) for h in HOOKS)):
            choose(self.statuses)
            self._require()
            sources = self._sources()
            with _stderr_captured() as diag:
                try:
                    bpf = BPF(text=self._text(sources), cflags=self._cflags())
                    try:
                        self._attach_backups(bpf)
                    except Exception:
                        self._detach_backups()
                        bpf.cleanup()
                        raise
                    return bpf
                except Exception as err:  # BCC raises bare Exception
                    failure = err
            blamed = self._blame(failure, sources, diag[0])
            if blamed is None:
                detail = _first_error(diag[0]) or str(failure)
                raise ConnscopeError(f"compiling/loading the eBPF programs failed: {detail}",
                                     "run `connscope check` for each hook's status")
            st, why = blamed
            st.tried.append((st.method.name, why))
        raise ConnscopeError("no working combination of hooks found", "run `connscope check`")

    def _blame(self, failure: Exception, sources: dict[str, str],
               diagnostics: str) -> tuple[HookStatus, str] | None:
        """The hook whose chosen method caused `failure`, and why, for its
        fallback list: a compile error under the method's guard, or a program
        of the method that the kernel refused to load or attach."""
        errors = culprit.compile_errors(diagnostics, sources)
        if errors:
            name, line, message = errors[0]
            flags = {k: st for st in self.statuses.values() if st.method for k in st.method.cflags}
            flag = culprit.guarding_flag(sources[name], line, flags)
            return (flags[flag], f"does not compile here: {message}") if flag else None
        st = self._culprit(culprit.failed_program(failure) or "")
        return (st, f"refused at load: {failure}") if st else None

    def _attach_backups(self, bpf) -> None:
        for st in self.statuses.values():
            for tp, fn in st.method.backups if st.method else ():
                prog = bpf.load_func(fn.encode(), BPF.RAW_TRACEPOINT)
                try:
                    self._links.append(features.attach_raw_tracepoint(prog.fd, tp))
                except OSError as err:
                    raise Exception(f"BPF program {fn}: {err.strerror}") from err

    def _detach_backups(self) -> None:
        for fd in self._links:
            os.close(fd)
        self._links = []

    def _culprit(self, program: str) -> HookStatus | None:
        """The hook whose chosen method has the program the kernel refused."""
        for st in self.statuses.values():
            if st.method and program in st.method.programs:
                return st
        return None

    def _require(self) -> None:
        for st in self.statuses.values():
            if st.method is None and not st.off and (st.hook.required or self.opts.strict):
                why = "; ".join(f"{m}: {r}" for m, r in st.tried) or "no method"
                raise KernelFeatureError(f"hook {st.hook.name} cannot attach ({why})",
                                         "see `connscope check` and KERNEL-FACTS in the README")

    # --- records ---------------------------------------------------------
    def _on_record(self, _ctx, data, size) -> int:
        # Runs inside BCC's poll: decode and queue, nothing else.
        try:
            self.pending.append(decode(ctypes.string_at(data, size)))
        except MalformedRecord:
            self.malformed += 1
        # A negative return makes libbpf stop consuming after this record
        # (it stays consumed); the rest waits in the ring for the next poll.
        # Under a flood one poll would otherwise hand over 100,000+ events
        # at once, and the agent's memory would follow.
        return -1 if len(self.pending) >= POLL_BATCH_MAX else 0

    def _on_perf_record(self, _cpu, data, size) -> None:
        # perf pads each raw sample so that it plus its u32 size header is
        # 8-byte aligned: 176 bytes arrive as 180. Trim only that padding.
        if layout.RECORD_SIZE <= size < layout.RECORD_SIZE + 8:
            size = layout.RECORD_SIZE
        self._on_record(_cpu, data, size)

    def _on_perf_lost(self, count: int) -> None:
        self.perf_lost += count

    def _open_buffer(self) -> None:
        if self.statuses["event_buffer"].method.name != "ringbuf":
            self.bpf["events"].open_perf_buffer(self._on_perf_record, page_cnt=self.opts.perf_pages,
                                                lost_cb=self._on_perf_lost)
            self._poll = self.bpf.perf_buffer_poll
            self.reader = {"method": "perf", "why": "no ring buffer: libbpf's perf buffer callbacks"}
            return
        ok, why = ringbuf.supported()
        if ok and not self.opts.ring_callbacks:
            table = self.bpf["events"]
            try:
                self._ring = ringbuf.RingReader(table.map_fd, table.max_entries, RECORD)
                self._poll = self._poll_mmap
                self.reader = {"method": "mmap", "why": "batches read from the ring's mapped pages"}
                return
            except OSError as err:  # mapping refused: libbpf maps it the same way, but try
                why = f"mapping the ring failed ({err.strerror or err})"
        self.bpf["events"].open_ring_buffer(self._on_record)
        self._poll = self._poll_ring
        self.reader = {"method": "libbpf", "why": why or "ring_callbacks set: libbpf's callback per record"}

    def _poll_ring(self, timeout_ms: int) -> None:
        # The programs wake us only for a window row's first record (bpf/emit.c):
        # consume what is there; when nothing was, wait in epoll for such a
        # wake-up or one tick, whichever is first, and consume again. Any
        # other record waits at most one tick; the 8 MiB ring holds seconds
        # of the heaviest churn.
        consume = self.bpf.ring_buffer_consume
        consume()
        if not self.pending and timeout_ms != 0:
            tick = self.opts.ring_tick_ms
            self.bpf.ring_buffer_poll(tick if timeout_ms < 0 else min(timeout_ms, tick))
            consume()

    def _poll_mmap(self, timeout_ms: int) -> None:
        # The same waits as _poll_ring, with a batch per read instead of a
        # callback per record.
        ring = self._ring
        batch = ring.read(POLL_BATCH_MAX)
        if not batch and timeout_ms != 0:
            tick = self.opts.ring_tick_ms
            ring.wait(tick if timeout_ms < 0 else min(timeout_ms, tick))
            batch = ring.read(POLL_BATCH_MAX)
        if batch:
            events, bad = from_fields(batch)
            self.pending.extend(events)
            self.malformed += bad

    def poll(self, timeout_ms: int) -> list[ConnEvent]:
        """Waits up to timeout_ms for records; returns what arrived."""
        self._poll(timeout_ms)
        out, self.pending = self.pending, []
        return out

    def counters(self) -> dict[str, int]:
        """Kernel-side counters, summed over CPUs, plus user-side drops."""
        def total(idx: int) -> int:
            return int(sum(self._counters.getvalue(ctypes.c_int(idx))))

        return {
            "emitted": total(layout.CNT_EMITTED),
            "lost_buffer_full": total(layout.CNT_LOST_RINGBUF),
            "lost_state_map_full": total(layout.CNT_LOST_STATE_MAP),
            "listener_map_full": total(layout.CNT_LISTENER_MAP),
            "aggregate_map_full": total(layout.CNT_AGG_FULL),
            "not_sent": total(layout.CNT_NOT_SENT),
            "sampled_out": total(layout.CNT_SAMPLED_OUT),
            "folded": total(layout.CNT_FOLDED),
            "lost_perf": self.perf_lost,
            "malformed": self.malformed + (self._ring.malformed if self._ring else 0),
        }

    def skipped_runs(self) -> dict[str, int]:
        """Per program: runs the kernel skipped because a BPF program was
        running on that CPU (any other one for perf-event tracepoints, which
        share one per-CPU guard; the same one for raw tracepoints)."""
        out = {}
        for name, fn in self.bpf.funcs.items():
            name = name.decode() if isinstance(name, bytes) else name
            try:
                out[name] = features.prog_recursion_misses(fn.fd)
            except OSError:
                continue
        return out

    def recursion_misses(self) -> dict[str, int]:
        """The skipped runs that can cost a record, at most one each: all but
        those of a program and its backup, which cover each other (Method.covered)."""
        covered = {p for st in self.statuses.values() if st.method for p in st.method.covered}
        return {k: v for k, v in self.skipped_runs().items() if k not in covered}

    def take_stale_closing(self, older_than_s: float = 5.0) -> list[bytes]:
        """Takes out of the socks map, raw, the states of sockets that reached
        CLOSE over older_than_s ago but whose end the kernel never reported
        (decode/finalize.py makes their records)."""
        socks = self.bpf["socks"]
        now = time.monotonic_ns()
        limit = int(older_than_s * 1e9)
        out = []
        for key, val in socks.items():
            if not (val.flags & layout.F_CLOSING) or not val.end_ns or now - val.end_ns < limit:
                continue
            raw = bytes(val)
            try:
                del socks[key]
            except KeyError:  # the kernel resolved it meanwhile
                continue
            out.append(raw)
        return out

    def socket_owners(self) -> dict[tuple, tuple[int, bytes, int, int]]:
        """{(local address, local port, remote address, remote port): (pid,
        comm, cgroup id, direction)} of the open connections the kernel
        tracks: what ties a socket sock_diag lists to its process. Addresses
        are 16 raw bytes (IPv4 in the first 4), as sock_diag gives them."""
        out = {}
        socks = self.bpf["socks"]
        try:  # one syscall per batch: 13 ms for 20,000 sockets here, against 73 ms a key at a time
            items = list(socks.items_lookup_batch())
        except Exception:  # BCC raises bare Exception; kernels before 5.6 have no batch lookup
            items = socks.items()
        for _key, val in items:
            if val.flags & layout.F_CLOSING or not val.flags & layout.F_ESTABLISHED:
                continue
            out[(bytes(val.saddr), val.sport, bytes(val.daddr), val.dport)] = (
                val.pid, bytes(val.comm).ljust(16, b"\0"), val.cgroup_id, val.direction)
        return out

    def listener_owners(self) -> dict[tuple, tuple[int, bytes, int]]:
        """{(address, port, family): (pid, comm, cgroup id)} of the listening
        sockets the kernel tracks; a wildcard listener's address is 16 zero bytes."""
        return {(bytes(k.addr), k.port, k.family): (v.pid, bytes(v.comm).ljust(16, b"\0"), v.cgroup_id)
                for k, v in self.bpf["listeners"].items()}

    def take_aggregates(self) -> tuple[list, list]:
        """The kernel's counts since the last take, raw (kernel/aggmaps.py);
        ([], []) when the programs were loaded without aggregation."""
        return self.aggregates.take() if self.aggregates else ([], [])

    def hook_choices(self) -> dict[str, dict]:
        return {name: st.as_dict() for name, st in self.statuses.items()}

    def health_unread(self) -> frozenset[str]:
        """The close record's health fields this agent cannot read: all of
        them without the socket_health hook, else those BTF lacks."""
        st = self.statuses.get("socket_health")
        if st is None or st.method is None:
            return frozenset(sock_fields.HEALTH_NEEDS)
        return frozenset(st.limits())

    def kernel_hz(self) -> int:
        return sock_fields.health()[0].get("HZ", 0)

    def seed_listeners(self, listeners) -> int:
        """Writes listeners that predate the agent into the kernel's owner map."""
        table, n = self.bpf["listeners"], 0
        for lst in listeners:
            key = layout.ListenerKey(port=lst.port, family=lst.family)
            ctypes.memmove(key.addr, lst.addr_bytes, len(lst.addr_bytes))
            val = layout.ListenerOwner(cgroup_id=lst.cgroup_id, pid=lst.pid, comm=lst.comm.encode()[:15])
            try:
                table[key] = val
                n += 1
            except Exception:  # map full: the kernel side counts its own misses
                break
        return n

    def close(self) -> None:
        self._detach_backups()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


__all__ = ["Tracer", "LoadOptions", "HookStatus", "bpf_dir", "choose"]


POLL_BATCH_MAX = 8192  # events one poll() hands over, at most (ring buffer only)


def _release_compiler_memory() -> None:
    """Gives the heap that clang/LLVM used for the compile back to the system.

    glibc keeps freed memory in its arenas; after BCC's in-process compile
    that is tens of MB of RSS the agent never uses again."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
