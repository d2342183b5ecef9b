"""What the Kafka sink needs from the spool beyond tests/pure/test_spool.py:
reading ahead of the commit point, batch appends, the reserve for `lost` records."""

from agent.sinks.spool import Spool


def payloads(n, size=100):
    return [f"{i:06d}".encode() + b"x" * (size - 6) for i in range(n)]


def test_read_ahead_then_commit_in_order_and_rewind(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=1000)
    data = payloads(30)
    assert sp.append_many(data) == 30
    first, c1 = sp.read(10)
    second, c2 = sp.read(10, start=c1)  # ahead of the commit point
    assert first + second == data[:20]
    sp.commit(c1)
    assert sp.committed == c1
    # a failure after c1: reading again from the commit point gives the second batch again
    again, _ = sp.read(10, start=sp.committed)
    assert again == data[10:20]
    sp.commit(c2)
    rest, c3 = sp.read(100, start=c2)
    assert rest == data[20:]
    sp.commit(c3)
    assert sp.size_bytes == 0


def test_append_many_stops_at_the_first_that_does_not_fit(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=5 * 112, segment_bytes=250)  # 112 = 12-byte header + 100
    assert sp.append_many(payloads(8)) == 5
    assert sp.size_bytes == 5 * 112
    items, _ = sp.read(10)
    assert items == payloads(5)


def test_reserve_lets_only_what_is_asked_past_the_bound(tmp_path):
    sp = Spool(str(tmp_path), max_bytes=3 * 112)
    assert sp.append_many(payloads(3)) == 3
    assert sp.append(b"y" * 100) is False
    assert sp.append(b"lost" + b"y" * 96, over=112) is True
    assert sp.append(b"lost2" + b"y" * 95, over=112) is False  # the reserve is used up
    items, _ = sp.read(10)
    assert items == payloads(3) + [b"lost" + b"y" * 96]
