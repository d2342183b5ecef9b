"""`connscope fleet`'s bad input: one line naming the thing and the fix, exit 2."""

import socket

import pytest

from .test_cli import assert_one_line_error, run_cli


def test_a_broker_that_does_not_answer_is_one_line():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cp = run_cli("fleet", "--bootstrap", f"127.0.0.1:{port}", "--exit-at-end", "--config", "/dev/null")
    assert_one_line_error(cp, 2, f"no Kafka broker answers at 127.0.0.1:{port}: ", "refused the connection",
                          "fix: start the broker or correct kafka.bootstrap")


@pytest.mark.parametrize("args,needles", [
    ((), ["fleet: no brokers to read from", "--bootstrap HOST:PORT"]),
    (("--bootstrap", "kafka1"), ["kafka.bootstrap", "kafka1"]),
    (("--bootstrap", "127.0.0.1:9", "--since", "yesterday"), ["--since 'yesterday' is not a time", "-15m"]),
    (("--bootstrap", "127.0.0.1:9", "--since", "2026-11-28T10:00:00"), ["has no time zone", "add Z"]),
    (("--bootstrap", "127.0.0.1:9", "--since", "-1h", "--until", "-2h"), ["is not after --since"]),
])
def test_bad_flags_are_one_line(args, needles):
    assert_one_line_error(run_cli("fleet", "--config", "/dev/null", *args), 2, *needles)
