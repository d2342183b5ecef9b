"""A method the kernel refuses at load, or whose C does not compile, moves
its hook to the next method.

The refusal is the real verifier's: the test's copy of the sources gives the
raw tcp_send_reset program a read the verifier rejects, and nothing else.
The compile error is clang's: an #error inside one method's guard.
"""

from __future__ import annotations

import re

import pytest

from ..agentrun import own_tracer, probed_method

REFUSED = "RAW_TRACEPOINT_PROBE(tcp_send_reset)\n{\n"


@pytest.fixture
def refusing_tracer():
    from agent.kernel.loader import Tracer

    class RefusingTracer(Tracer):
        def _sources(self) -> dict[str, str]:
            sources = super()._sources()
            assert REFUSED in sources["reset.c"], "bpf/reset.c changed: update the test's marker"
            # a load from address 0: "invalid mem access 'scalar'"
            sources["reset.c"] = sources["reset.c"].replace(
                REFUSED, REFUSED + "\tif (*(volatile u64 *)0)\n\t\treturn 1;\n")
            return sources

    with own_tracer(("reset_sent", "raw_tracepoint"),
                    "reset_sent is not a raw tracepoint on this kernel: nothing to fall back from",
                    make=RefusingTracer) as t:
        yield t


def test_a_refused_program_falls_back_to_the_next_method_and_says_why(refusing_tracer):
    st = refusing_tracer.statuses["reset_sent"]
    assert st.method.name == "tracepoint"
    [(name, why)] = [(m, r) for m, r in st.tried if m == "raw_tracepoint"]
    assert why.startswith("refused at load:") and "raw_tracepoint__tcp_send_reset" in why
    # the other hooks kept their first choice
    assert refusing_tracer.statuses["lifecycle"].method.name == "raw_tracepoint"
    assert refusing_tracer.statuses["reset_received"].method.name == "raw_tracepoint"


# How each method's C is guarded in bpf/ (`#if <its -D flag> == HOOK_...`).
GUARDS = {"fentry": "HOOK_FENTRY", "kprobe": "HOOK_KPROBE", "raw_tracepoint": "HOOK_RAW_TP"}


def _breakable() -> tuple[str, str]:
    """A hook whose chosen method here has a guard to break and a method
    after it: tcp_connect on a stock kernel (fentry, then kprobe), else
    the raw tracepoint of retransmit."""
    from agent.kernel.hooks import hook

    for name in ("tcp_connect", "retransmit"):
        chosen = probed_method(name)
        methods = [m.name for m in hook(name).methods]
        if chosen in GUARDS and methods.index(chosen) < len(methods) - 1:
            return name, chosen
    pytest.skip("no hook here has a guarded method with a fallback after it")


@pytest.fixture
def broken_tracer():
    from agent.kernel.hooks import hook
    from agent.kernel.loader import Tracer

    name, method = _breakable()
    [define] = next(m for m in hook(name).methods if m.name == method).cflags
    guard = re.compile(rf"^#\s*(el)?if {define} == {GUARDS[method]}\b.*$", re.M)

    class BrokenTracer(Tracer):
        def _sources(self) -> dict[str, str]:
            sources = super()._sources()
            [(name, m)] = [(n, m) for n, text in sources.items() for m in [guard.search(text)] if m]
            text = sources[name]
            sources[name] = text[: m.end()] + "\n#error connscope test: broken on purpose" + text[m.end():]
            return sources

    with own_tracer(make=BrokenTracer) as t:
        yield t, name, method


def test_a_method_that_does_not_compile_falls_back_and_says_why(broken_tracer):
    t, name, method = broken_tracer
    st = t.statuses[name]
    from agent.kernel.hooks import hook

    methods = [m.name for m in hook(name).methods]
    assert st.method is not None and methods.index(st.method.name) > methods.index(method)
    [why] = [r for m, r in st.tried if m == method]
    assert why.startswith("does not compile here:") and "broken on purpose" in why
    # the other hooks kept their first choice
    for other in ("lifecycle", "destroy", "error_report"):
        assert t.statuses[other].method.name == probed_method(other)
