"""The trace table: a column per meaning, units in the cells, no line wider than the terminal."""

import pytest


from agent.sinks.table import NARROW, WIDE, WIDE_MIN, Table



def _conn(**kw):
    r = {"type": "connect", "ts": "2026-11-28T05:42:18.123456Z", "pid": 4242, "comm": "a-long-process-n",
         "saddr": "fd00:12:34:56:78:9a:bc:1", "sport": 51234, "daddr": "fd00:12:34:56:78:9a:bc:2", "dport": 5432,
         "result": "ok", "error": None, "latency_us": 1234, "syn_retransmits": 0}
    r.update(kw)
    return r


def _close(**kw):
    r = _conn(type="close", error=None, closed_by="local", duration_us=83_400_000, retransmits=2)
    r.update(kw)
    return r


def test_layouts_fit_their_widths():
    assert sum(w for _, w, _, _ in NARROW) + len(NARROW) - 1 == 80
    assert WIDE_MIN == sum(w for _, w, _, _ in WIDE) + len(WIDE) - 1


@pytest.mark.parametrize("width", [80, 100, WIDE_MIN, 200])
def test_no_line_is_wider_than_the_terminal(width):
    t = Table(width)
    start = {"type": "agent", "event": "start", "hooks_summary": ", ".join(f"hook{i}=raw_tracepoint" for i in range(13))}
    lines = [t.header(), *t.lines(_conn()), *t.lines(_close()), *t.lines(start)]
    assert all(len(l) <= width for l in lines), [l for l in lines if len(l) > width]
    assert len(t.lines(start)) > 1 or width >= 200


def test_connect_latency_and_lifetime_have_their_own_columns_and_units():
    for width in (80, 200):
        t = Table(width)
        head = t.header().split()
        assert "CONNECT" in head and "LIFETIME" in head and "MS" not in head
        conn, close = t.lines(_conn())[0].split(), t.lines(_close())[0].split()
        i, j = head.index("CONNECT"), head.index("LIFETIME")
        # "by local" is two words in the close row's RESULT cell
        assert (conn[i], conn[j]) == ("1.234ms", "-"), conn
        assert (close[i + 1], close[j + 1]) == ("-", "1.4m"), close
    assert Table(80).lines(_conn())[0].split()[4] == "…6:78:9a:bc:2]:5432"  # the port stays visible
