"""`connscope sockets`: the live TCP connections now, an `ss -tnpi` for incidents.

No eBPF: sock_diag in every network namespace a process lives in
(ports/live.py), the process holding each socket from /proc
(ports/owners.py) and the options set on it read through a duplicate of its
fd. A table on a terminal, JSON lines (schema type "socket") otherwise.
"""

from __future__ import annotations

import socket
import sys

import click

from ..aggregate.diagnose import DiagnosisThresholds
from ..decode.text import endpoint_text
from ..errors import ConnscopeError
from ..ports import PortReadError, ephemeral_range
from ..ports.live import listeners, live_sockets
from ..ports.owners import namespaces, options
from ..records.build import RecordBuilder
from ..records.sockets import socket_record
from ..sinks.jsonlines import JsonLinesSink
from .options import filter_options


@click.command()
@filter_options
@click.option("--idle-threshold", type=click.FloatRange(min=0), metavar="SECONDS",
              default=DiagnosisThresholds.idle_without_keepalive_s, show_default=True,
              help="An outbound connection idle this long without keepalive is diagnosed idle_without_keepalive.")
def sockets(as_json, pids, comms, ports, ipv4, ipv6, idle_threshold) -> None:
    """List the live TCP connections with their process, queues, RTT, bytes, keepalive, nodelay and idle time."""
    families = {socket.AF_INET} if ipv4 else {socket.AF_INET6} if ipv6 else set()
    builder = RecordBuilder()
    ts = builder.clock.now()
    records = []
    nss = namespaces(set(pids) if pids else None)
    if not nss:
        raise ConnscopeError("no process to look at" + (f" (no process {', '.join(map(str, pids))})" if pids else ""),
                             "check the --pid values")
    for ns in nss.values():
        try:
            socks, listening = live_sockets(ns.path), {lst.port for lst in listeners(ns.path)}
            low, high = ephemeral_range(ns.path)
        except PortReadError as err:
            print(f"connscope: {err.one_line()}", file=sys.stderr)
            continue
        for s in socks:
            holder = ns.sockets.get(s.inode)
            if pids and (holder is None or holder.pid not in pids):
                continue
            if comms and (holder is None or holder.comm not in comms):
                continue
            if ports and s.sport not in ports and s.dport not in ports:
                continue
            if families and s.family not in families:
                continue
            opts = options(holder) if holder else None
            # sock_diag does not say who connected: a local port something
            # listens on, or a local port outside the ephemeral range facing
            # one inside it, is a server's
            inbound = s.sport in listening or (not low <= s.sport <= high and low <= s.dport <= high)
            records.append(socket_record(builder, ts, ns.ino, s, holder, opts, inbound, idle_threshold))
    records.sort(key=lambda r: (r["pid"], r["sport"], r["dport"]))
    if not as_json and sys.stdout.isatty():
        _table(records)
        return
    sink = JsonLinesSink()
    for seq, rec in enumerate(records, 1):
        rec["seq"] = seq
        sink.write(rec)
    sink.close()


def _table(records: list[dict]) -> None:
    head = ("PID", "COMM", "STATE", "LOCAL", "PEER", "RECV-Q", "SEND-Q", "RTT", "SENT", "RECEIVED", "KA", "NODELAY",
            "IDLE", "DIAGNOSES")
    rows = [head]
    for r in records:
        yesno = {True: "yes", False: "no", None: "-"}
        ka = yesno[r["keepalive"]] + (f"/{r['keepalive_idle_s']}s" if r["keepalive_idle_s"] else "")
        rows.append((str(r["pid"] or "-"), r["comm"] or "-", r["state"], endpoint_text(r["saddr"], r["sport"]),
                     endpoint_text(r["daddr"], r["dport"]), str(r["recv_q"]), str(r["send_q"]),
                     "-" if r["rtt_us"] is None else f"{r['rtt_us'] / 1000:.2f}ms",
                     "-" if r["bytes_acked"] is None else str(r["bytes_acked"]),
                     "-" if r["bytes_received"] is None else str(r["bytes_received"]),
                     ka, yesno[r["nodelay"]], "-" if r["idle_ms"] is None else f"{r['idle_ms'] / 1000:.1f}s",
                     ",".join(r["diagnoses"]) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
