"""Connections that go wrong after the handshake: resets and retransmits."""

import pytest

from netlab import pick_port

from .conftest import match


def test_peer_reset_mid_connection(agent, lab):
    port = pick_port()
    _, listening = lab.server(port, mode="reset", comm="cs-srv")
    [c] = lab.client(port, "--send", 10)
    assert c["errno"] == 0 and c.get("close_errno") == 104
    [out] = agent.wait_for(match(type="close", family=lab.family, sport=c["sport"], dport=port))
    assert (out["errno"], out["error"], out["closed_by"]) == (104, "ECONNRESET", "reset")
    assert (out["resets_received"], out["resets_sent"], out["time_wait"]) == (1, 0, False)
    assert (out["pid"], out["comm"]) == (c["pid"], "cs-cli")
    [inb] = agent.wait_for(match(type="close", family=lab.family, sport=port, dport=c["sport"]))
    assert (inb["resets_sent"], inb["resets_received"], inb["closed_by"]) == (1, 0, "reset")
    assert (inb["pid"], inb["comm"]) == (listening["pid"], "cs-srv")


@pytest.mark.timeout(300)
def test_data_retransmits_under_random_drop(agent, lab):
    port = pick_port()
    lab.server(port, mode="hold")  # reads to EOF however long the transfer takes
    # drop 30% of the client's data segments (never the handshake) at the server
    lab.nft_server(f"tcp dport {port} tcp flags & (syn | fin | rst) == 0 meta length > 100 "
                   f"numgen random mod 100 < 30 drop")
    before = _retrans_segs(lab)
    [c] = lab.client(port, "--send", 2_000_000, "--close-first", "--timeout", 60)
    assert c["errno"] == 0
    # The client closes first with data still unacknowledged: its socket
    # ends when the last retransmission gets through, which under 30% loss
    # and backed-off timers took over 30 s once in CI.
    [out] = agent.wait_for(match(type="close", family=lab.family, sport=c["sport"], dport=port), timeout=120)
    segs = _retrans_segs(lab) - before
    # One tcp_retransmit_skb event can carry several segments (TSO), so the
    # record counts events: at least one, at most the kernel's segment count.
    assert segs > 0
    assert 1 <= out["retransmits"] <= segs
    assert out["syn_retransmits"] == 0 and out["errno"] == 0


def _retrans_segs(lab):
    text = lab.pair.run(lab.pair.client_ns, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    for head, vals in zip(text[::2], text[1::2]):
        if head.startswith("Tcp:"):
            return int(dict(zip(head.split()[1:], vals.split()[1:]))["RetransSegs"])
    raise KeyError("RetransSegs")
