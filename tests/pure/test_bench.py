"""bench/: counting records per phase, medians, and BENCHMARKS.md keeping sections it does not generate."""

import json
from pathlib import Path

from bench import count, report, stats


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_connscope_records_are_counted_by_phase_port_pid_and_time(tmp_path):
    out = _jsonl(tmp_path / "out.jsonl", [
        {"type": "agent", "event": "start"},
        {"type": "connect", "sport": 40000, "dport": 2001, "result": "ok"},
        {"type": "accept", "sport": 2001, "dport": 40000},
        {"type": "close", "sport": 40000, "dport": 2001, "retransmits": 2, "syn_retransmits": 1},
        {"type": "close", "sport": 2001, "dport": 40000},
        {"type": "connect", "sport": 40001, "dport": 2002, "result": "error", "syn_retransmits": 3},
        {"type": "connect", "sport": 40002, "dport": 9999, "result": "ok"},  # not the bench's
        {"type": "summary", "pid": 77, "connects_ok": 5, "accepts": 5, "closes": 10, "connects_failed": 0},
        {"type": "summary", "pid": 78, "connects_ok": 9},  # another process
        {"type": "lost", "ts": "2026-01-01T00:00:01.500000Z", "count": 4, "stage": "kernel",
         "reason": "buffer_full"},
        {"type": "lost", "ts": "2026-01-01T00:00:09.000000Z", "count": 2, "stage": "queue",
         "reason": "queue_full"},
        {"type": "agent", "event": "stop", "records": {"connect": 3}},
    ])
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    got = count.connscope_output(out, {2001: "a", 2002: "b"}, {77: "a"}, {"a": (t0, t0 + 2), "b": (t0 + 2, t0 + 3)})
    a, b = got["phases"]["a"], got["phases"]["b"]
    assert a["records"] == {"connect": 1, "accept": 1, "close": 2}
    assert a["retransmits"] == 3
    assert a["summary"] == {"connects_ok": 5, "connects_failed": 0, "accepts": 5, "closes": 10}
    assert (a["lost"], a["lost_reasons"]) == (4, {"kernel/buffer_full": 4})
    assert b["records"] == {"connect": 1} and b["retransmits"] == 3 and b["lost"] == 0
    assert got["lost_outside_phases"] == 2
    assert got["stop"]["records"] == {"connect": 3}


def test_bcc_lines_match_either_port_column_and_losses_by_stderr_span(tmp_path):
    out = tmp_path / "out"
    out.write_text("PID   COMM  LADDR  LPORT RADDR  RPORT TX_KB RX_KB MS\n"
                   "1 cschurn 127.0.0.1 40000 127.0.0.1 2001 0 0 0.1\n"
                   "1 cschurn 127.0.0.1 2001 127.0.0.1 40000 0 0 0.1\n"
                   "1 cschurn 127.0.0.1 2001 127.0.0.1 2002 0 0 0.1\n"  # counted once, for the first column
                   "1 other 127.0.0.1 50000 127.0.0.1 2002 2001 0 0.1\n")  # 2001 is in TX_KB: not a port
    err = tmp_path / "err"
    first = b"Possibly lost 3 samples\n"
    err.write_bytes(first + b"Possibly lost 5 samples\n")
    got = count.bcc_output(out, err, {2001: "a", 2002: "b"}, (3, 5), {"a": (0, len(first)), "b": (len(first), 99)})
    assert got["phases"]["a"] == {"records": {"lines": 3}, "lost": 3}
    assert got["phases"]["b"] == {"records": {"lines": 1}, "lost": 5}
    assert got["lost_total"] == 8


def test_cell_shows_median_and_spread_only_when_values_differ():
    assert stats.cell([3.0, 1.0, 2.0], "{:.1f}", "%") == "2.0% (1.0–3.0)"
    assert stats.cell([5.0, 5.0]) == "5"
    assert stats.cell(None) == "—"


def test_merge_keeps_sections_it_does_not_generate_in_order():
    old = ("# Benchmarks\n\nold intro\n\n## Targets\n\nold table\n\n## Where the cost goes\n\nhand text\n\n"
           "## Kafka sink throughput\n\n| a | b |\n")
    new = report.merge(old, "# Benchmarks\n\nnew intro\n\n## Targets\n\nnew table\n")
    assert new == ("# Benchmarks\n\nnew intro\n\n## Targets\n\nnew table\n\n"
                   "## Where the cost goes\n\nhand text\n\n## Kafka sink throughput\n\n| a | b |\n")
    assert report.merge("", "# B\n") == "# B\n"
