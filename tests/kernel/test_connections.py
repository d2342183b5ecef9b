"""A successful connection, seen from both ends, with the right process on each."""

import time

from netlab import pick_port, wait_json_line

from .conftest import match


def test_connect_accept_and_close_in_both_directions(agent, lab):
    port = pick_port()
    srv, listening = lab.server(port, mode="close", comm="cs-srv")
    [c] = lab.client(port, "--send", 100, "--close-first", comm="cs-cli")
    assert c["errno"] == 0 and c["sport"] > 0

    tuple_out = dict(family=lab.family, saddr=lab.client_addr, sport=c["sport"], daddr=lab.server_addr, dport=port)
    tuple_in = dict(family=lab.family, saddr=lab.server_addr, sport=port, daddr=lab.client_addr, dport=c["sport"])

    [conn] = agent.wait_for(match(type="connect", **tuple_out))
    assert (conn["pid"], conn["comm"], conn["pid_source"]) == (c["pid"], "cs-cli", "connect")
    assert (conn["result"], conn["errno"], conn["error"], conn["syn_retransmits"]) == ("ok", 0, None, 0)
    assert conn["latency_us"] is not None and conn["latency_us"] < 1_000_000

    [acc] = agent.wait_for(match(type="accept", **tuple_in))
    assert (acc["pid"], acc["comm"], acc["pid_source"]) == (listening["pid"], "cs-srv", "listener")
    assert acc["synack_retransmits"] == 0

    [out] = agent.wait_for(match(type="close", **tuple_out))
    assert (out["pid"], out["comm"], out["direction"]) == (c["pid"], "cs-cli", "outbound")
    assert (out["closed_by"], out["time_wait"], out["errno"], out["error"]) == ("local", True, 0, None)
    assert out["duration_us"] is not None and out["preexisting"] is False

    [inb] = agent.wait_for(match(type="close", **tuple_in))
    assert (inb["pid"], inb["comm"], inb["direction"]) == (listening["pid"], "cs-srv", "inbound")
    assert inb["pid_source"] == "first_io"
    assert (inb["closed_by"], inb["time_wait"], inb["errno"]) == ("peer", False, 0)
    assert (out["resets_sent"], out["resets_received"], inb["resets_sent"], inb["resets_received"]) == (0, 0, 0, 0)


def test_server_closing_first_leaves_time_wait_on_the_server(agent, lab):
    port = pick_port()
    lab.server(port, mode="close", comm="cs-srv")
    # The client sends nothing and waits for the server's EOF; the server
    # gives up reading after 1 s and closes first.
    [c] = lab.client(port, comm="cs-cli")
    [out] = agent.wait_for(match(type="close", family=lab.family, sport=c["sport"], dport=port))
    [inb] = agent.wait_for(match(type="close", family=lab.family, sport=port, dport=c["sport"]))
    assert (inb["closed_by"], inb["time_wait"], inb["comm"]) == ("local", True, "cs-srv")
    assert (out["closed_by"], out["time_wait"], out["comm"]) == ("peer", False, "cs-cli")
    assert inb["duration_us"] >= 900_000


def test_close_is_reported_while_the_application_still_holds_the_socket(agent, lab):
    """The kernel closes the socket (FIN both ways) but the fd stays open, so no
    tcp_destroy_sock comes: the agent reaps the state after a few seconds."""
    port = pick_port()
    lab.server(port, mode="close")
    client = lab.pair.popen(lab.pair.client_ns, lab.peer_cmd(
        "client", "--addr", lab.server_addr, "--port", port, "--comm", "cs-cli", "--send", 10,
        "--half-close", "--hold", 14))
    # ip netns exec execs the peer in place: this is the client's pid
    [out] = agent.wait_for(match(type="close", family=lab.family, dport=port, pid=client.pid), timeout=25)
    assert client.poll() is None, "the record should come before the application closes its fd"
    assert (out["closed_by"], out["time_wait"], out["errno"], out["incomplete"]) == ("local", True, 0, False)
    c = wait_json_line(client, lambda j: j["event"] == "connect", timeout=30)
    assert (c["sport"], c["pid"]) == (out["sport"], out["pid"])
    client.wait(30)
    time.sleep(1)
    assert len([r for r in agent.records() if match(type="close", family=lab.family, sport=c["sport"],
                                                        dport=port)(r)]) == 1
