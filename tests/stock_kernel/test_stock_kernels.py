"""The agent on Debian's stock 6.1 and 6.12 kernels: the paths production hosts take.

Each guest runs `connscope check` and the kernel tier's scenarios with real
traffic (tests/kernel: connect and close both ways with their pids, refused,
timed out with SYN retransmits, EADDRNOTAVAIL, unreachable, every fatal ICMP
code, peer reset, TIME_WAIT, IPv4 and IPv6) against its own kernel, once with
the methods the agent picks by itself (fentry for tcp_connect) and once with
each other method of tcp_connect forced. The same assertions hold for every
method: the records do not depend on how the connect was hooked.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import require_guest
from .qemu import StockKernel

REPO = Path(__file__).resolve().parents[2]
RELEASES = StockKernel.releases()

# What the agent must choose by itself on each kernel: the first method of
# each row of the attach table (agent/kernel/hooks.py), except where the
# kernel lacks it. Debian 6.1 has no sock_send/recv_length tracepoints (6.3+).
FIRST_CHOICES = {
    "tcp_connect": "fentry", "lifecycle": "raw_tracepoint", "error_report": "raw_tracepoint",
    "destroy": "raw_tracepoint", "connect_syscall": "tracepoint", "so_error_syscall": "tracepoint",
    "socket_syscall": "fd_walk", "retransmit": "raw_tracepoint", "synack_retransmit": "tracepoint",
    "reset_sent": "raw_tracepoint", "reset_received": "raw_tracepoint", "first_io": "raw_tracepoint",
    "socket_health": "btf_offsets", "nagle": "raw_tracepoint", "event_buffer": "ringbuf",
}
# Neither has the tcp_sendmsg_locked tracepoint (it is not in their
# include/trace/events/tcp.h): the nagle hook takes the function's entry.
EXPECTED = {
    "6.1.0-56-amd64": {**FIRST_CHOICES, "first_io": "fentry", "nagle": "fentry"},
    "6.12.111+deb12-amd64": {**FIRST_CHOICES, "nagle": "fentry"},
}

# The scenarios every method runs (tests/kernel), minus the two slowest that
# test the agent's user-space reaper and random-loss retransmits rather than
# a hook: they cost a minute of emulated time each and run on the host.
SCENARIOS = ["tests/kernel/test_connections.py", "tests/kernel/test_failures.py",
             "tests/kernel/test_resets_retransmits.py",
             "tests/kernel/test_hooks.py::test_the_agent_takes_the_expected_methods"]
DESELECT = "not still_holds_the_socket and not random_drop"
# The fatal ICMP path does not depend on how the connect was hooked: a forced
# method runs one code of it per family (as icmpx sends it), the agent's own
# choices run every code.
DESELECT_FORCED = DESELECT + " and (not fatal_icmp or icmpx) and not older_than_the_agent"
# With the agent's own choices, also: a method whose C is broken on purpose
# falls back (fentry -> kprobe here), and the raw programs read sockets at
# this kernel's BTF offsets correctly (BPF_PROG_TEST_RUN on real sockets),
# and the kernel's window counts (bpf/aggregate.c) count a connection, and
# close records read tcp_sock at this kernel's BTF offsets (bytes, RTT, MSS,
# keepalive and Nagle against TCP_INFO), and small writes Nagle holds are
# counted from the function's entry (nagle_delay). The
# fd_walk test (a pre-TCP failure of a socket older than the agent) starts
# its own agent, so it runs here only.
DEFAULT_EXTRA = ["tests/kernel/test_load_fallback.py", "tests/kernel/test_unseen_close.py",
                 "tests/kernel/test_hooks.py::test_window_counts_are_kept_in_the_kernel_only_when_asked[True]",
                 "tests/kernel/test_socket_health.py::test_close_records_carry_the_bytes_rtt_mss_and_options_tcp_info_shows",
                 "tests/kernel/test_socket_health.py::test_the_start_record_reports_the_health_reads",
                 "tests/kernel/test_live_sockets.py::test_two_small_writes_then_a_read_is_diagnosed_nagle_delay_and_nodelay_is_not"]

RUNS = {  # name -> agent flags
    "default": "",
    "kprobe": "--force-hook tcp_connect=kprobe",
    "tracepoint": "--force-hook tcp_connect=tracepoint",
}

pytestmark = [pytest.mark.stock_kernel, pytest.mark.timeout(1500)]


def _guest_script(out: Path, run: str, release: str) -> str:
    expect = dict(EXPECTED[release])
    if run != "default":
        expect["tcp_connect"] = run
    tests, select = _selection(run)
    check = (f"{shlex.quote(sys.executable)} -m agent check >{out}/check.txt 2>&1; echo $? >{out}/check.rc"
             if run == "default" else "")
    return f"""
cd {shlex.quote(str(REPO))}
export CSTEST_SHARED_AGENT=1
export CSTEST_AGENT_ARGS={shlex.quote(RUNS[run])}
export CSTEST_EXPECT_HOOKS={shlex.quote(' '.join(f'{k}={v}' for k, v in expect.items()))}
{check}
exec {shlex.quote(sys.executable)} -m pytest -p no:cacheprovider -q -rfEs --color=no --junitxml={out}/junit.xml \\
    -k {shlex.quote(select)} {' '.join(tests)}
"""


def _selection(run: str) -> tuple[list[str], str]:
    """The tests a guest runs, and its -k expression."""
    if run == "default":
        return SCENARIOS + DEFAULT_EXTRA, DESELECT
    return SCENARIOS, DESELECT_FORCED


def _collected(run: str) -> set[str]:
    """The ids pytest collects here for the guest's selection: exactly what must pass there."""
    tests, select = _selection(run)
    cp = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                         "-k", select, *tests], capture_output=True, text=True, cwd=REPO, timeout=120)
    ids = {ln.strip() for ln in cp.stdout.splitlines() if "::" in ln}
    assert ids, cp.stdout + cp.stderr
    return ids


def _boot(release: str, run: str) -> dict:
    kernel = StockKernel.find(release)
    with tempfile.TemporaryDirectory(prefix="connscope-stock-") as tmp:
        out = Path(tmp)
        result = kernel.run(_guest_script(out, run, release), timeout=1200, outdir=out)
        files = {p.name: p.read_text(errors="replace") for p in out.iterdir() if p.is_file()}
    return {"result": result, "files": files}


@pytest.fixture(scope="module")
def guests(guest_pool):
    """(release, run) -> the guest's result; every guest is queued at once,
    the agent's own choices first, so that the pool is never idle."""
    for run in RUNS:
        for release in RELEASES:
            require_guest(release)
            guest_pool.submit((release, run), _boot, release, run)
    return lambda release, run: guest_pool.submit((release, run), _boot, release, run).result()


def _junit(files: dict) -> list[tuple[str, str, str]]:
    """(test id, outcome, message) of every test case the guest ran."""
    root = ET.fromstring(files["junit.xml"])
    out = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, (child.get("message") or "")[:500]
        out.append((name, outcome, message))
    return out


@pytest.mark.parametrize("release", RELEASES)
def test_check_picks_fentry_and_the_raw_tracepoints(guests, release):
    g = guests(release, "default")
    assert "check.txt" in g["files"], g["result"].explain()
    text, rc = g["files"]["check.txt"], g["files"]["check.rc"].strip()
    assert rc == "0", text
    rows = {ln.split()[0]: ln.split()[1:3] for ln in text.splitlines()
            if ln.split() and ln.split()[0] in EXPECTED[release]}
    assert {k: v for k, v in rows.items()} == {k: [m, "active"] for k, m in EXPECTED[release].items()}, text


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("release", RELEASES)
def test_kernel_scenarios_in_the_guest(guests, release, run):
    g = guests(release, run)
    result = g["result"]
    assert "junit.xml" in g["files"], result.explain()
    cases = _junit(g["files"])
    bad = [c for c in cases if c[1] != "passed"]
    assert not bad and result.status == 0, "\n".join(f"{n}: {o}: {m}" for n, o, m in bad) + "\n" + result.explain()
    # every scenario ran: both families of each, and the fatal ICMP codes
    assert {c[0] for c in cases} == _collected(run)
