"""A program the kernel refuses at load moves its hook to the next method.

The refusal is the real verifier's: the test's copy of the sources gives the
raw tcp_send_reset program a read the verifier rejects, and nothing else.
"""

from __future__ import annotations

import pytest

from ..agentrun import own_tracer

REFUSED = "RAW_TRACEPOINT_PROBE(tcp_send_reset)\n{\n"


@pytest.fixture
def refusing_tracer():
    from agent.kernel.loader import Tracer

    class RefusingTracer(Tracer):
        def _text(self) -> str:
            text = super()._text()
            assert REFUSED in text, "bpf/reset.c changed: update the test's marker"
            # a load from address 0: "invalid mem access 'scalar'"
            return text.replace(REFUSED, REFUSED + "\tif (*(volatile u64 *)0)\n\t\treturn 1;\n")

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
