"""The bench's network: one namespace pair from tests/netlab.py, created once.

Loopback churn runs on the `lo` of the client namespace, not the host's: the
TIME_WAIT sockets (hundreds of thousands per run), the widened ephemeral
range and the listen ports stay there, so the bench neither runs the host out
of ports nor disturbs anything else on it, and the namespace dies with all of
it at the end. The kernel path is the host loopback's, and every tracer sees
all namespaces. The retransmit case uses the veth between the two namespaces
with a random-drop nftables rule in the server namespace. Addresses are
169.254.N.x only (netlab's); nothing leaves the pair.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.netlab import NetPair, sweep_stale  # noqa: E402  (the repo root is on sys.path now)

# Ephemeral ports start above every port the bench listens on (2000..9999).
EPHEMERAL = "10000 65535"
NFT_TABLE = "csbench"


class BenchLab:
    """A NetPair with the sysctls the bench needs; close() deletes everything."""

    def __init__(self) -> None:
        sweep_stale()  # pairs left by a killed earlier run (their owner is gone)
        self.pair = NetPair()
        for ns in (self.pair.client_ns, self.pair.server_ns):
            self.pair.sysctl(ns, "net.ipv4.ip_local_port_range", EPHEMERAL)
        self.loop_ns = self.pair.client_ns
        self.drop_pct: float | None = None

    def set_drop(self, port: int, pct: float) -> None:
        """Drop pct% of TCP packets to and from `port` at random, in the server namespace.

        Both directions, so SYN, SYN-ACK, data-less ACK and FIN retransmits all
        happen. The rule replaces any earlier one (one table, flushed first).
        """
        script = (f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
                  f"table inet {NFT_TABLE} {{\n"
                  f"  chain input {{ type filter hook input priority 0; policy accept;\n"
                  f"    tcp dport {port} numgen random mod 1000 < {int(pct * 10)} drop\n  }}\n"
                  f"  chain output {{ type filter hook output priority 0; policy accept;\n"
                  f"    tcp sport {port} numgen random mod 1000 < {int(pct * 10)} drop\n  }}\n}}\n")
        self.pair.nft(self.pair.server_ns, script)
        self.drop_pct = pct

    def tcp_counters(self, ns: str) -> dict[str, int]:
        """The namespace's absolute TCP counters from /proc/net/{snmp,netstat}.

        Read directly (not with nstat, whose history file other users of the
        machine share). Keys look like "Tcp:RetransSegs", "TcpExt:TCPSynRetrans".
        """
        text = self.pair.run(ns, ["cat", "/proc/net/snmp", "/proc/net/netstat"]).stdout
        lines = text.splitlines()
        out: dict[str, int] = {}
        for head, vals in zip(lines[0::2], lines[1::2]):
            group, names = head.split(":", 1)
            for name, val in zip(names.split(), vals.split(":", 1)[1].split()):
                try:
                    out[f"{group}:{name}"] = int(val)
                except ValueError:
                    pass
        return out

    def close(self) -> None:
        self.pair.close()

    def __enter__(self) -> "BenchLab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
