"""The ephemeral port range of a network namespace, and its reserved ports.

Both sysctls are per network namespace and net.ipv4.* governs IPv6 too:

- net.ipv4.ip_local_port_range: "LOW<TAB>HIGH", inclusive; connect() and
  bind(0) pick local ports from it.
- net.ipv4.ip_local_reserved_ports: "1000-1010,2000" (empty when none); ports
  the kernel never picks automatically.
"""

from __future__ import annotations

from .netns import PortReadError, in_netns, netns_label

SYSCTL_DIR = "/proc/sys/net/ipv4"
PORT_MAX = 65535


def _read_sysctl(name: str) -> str:
    with open(f"{SYSCTL_DIR}/{name}") as f:
        return f.read()


def _read(netns: str | None, name: str) -> str:
    try:
        if netns is None:
            return _read_sysctl(name)
        return in_netns(netns, _read_sysctl, name)
    except OSError as e:
        raise PortReadError(f"cannot read net.ipv4.{name} in {netns_label(netns)}: {e.strerror or e}",
                            netns=netns, errno=e.errno) from None


def parse_port_range(text: str) -> tuple[int, int]:
    """'32768\\t60999\\n' -> (32768, 60999). ValueError when it is not two ports, low <= high."""
    parts = text.split()
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:  # not two items, or not numbers
        raise ValueError(f"not a port range: {text!r}") from None
    if not 0 <= lo <= hi <= PORT_MAX:
        raise ValueError(f"not a port range: {text!r}")
    return lo, hi


def parse_port_list(text: str) -> set[int]:
    """'1000-1010,2000' -> {1000, ..., 1010, 2000}; '' -> set().

    The kernel's own format (proc_do_large_bitmap): comma-separated ports and
    inclusive LOW-HIGH ranges. ValueError on anything else.
    """
    ports: set[int] = set()
    text = text.strip()
    if not text:
        return ports
    for item in text.split(","):
        lo_s, sep, hi_s = item.strip().partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise ValueError(f"not a port list: {text!r}") from None
        if not 0 <= lo <= hi <= PORT_MAX:
            raise ValueError(f"not a port list: {text!r}")
        ports.update(range(lo, hi + 1))
    return ports


def ephemeral_range(netns: str | None = None) -> tuple[int, int]:
    """(low, high), inclusive, of net.ipv4.ip_local_port_range in netns (None: our own)."""
    text = _read(netns, "ip_local_port_range")
    try:
        return parse_port_range(text)
    except ValueError as e:
        raise PortReadError(f"net.ipv4.ip_local_port_range in {netns_label(netns)}: {e}", netns=netns) from None


def reserved_ports(netns: str | None = None) -> set[int]:
    """The ports in net.ipv4.ip_local_reserved_ports in netns (None: our own)."""
    text = _read(netns, "ip_local_reserved_ports")
    try:
        return parse_port_list(text)
    except ValueError as e:
        raise PortReadError(f"net.ipv4.ip_local_reserved_ports in {netns_label(netns)}: {e}", netns=netns) from None


def usable_ports(lo: int, hi: int, reserved: set[int] | frozenset[int] = frozenset()) -> int:
    """How many ports of lo..hi (inclusive) the kernel may pick: those not reserved.

    This is the ceiling on concurrent connections (TIME_WAIT included) from one
    local address to one remote address and port. 0 when hi < lo.
    """
    if hi < lo:
        return 0
    return (hi - lo + 1) - sum(1 for p in reserved if lo <= p <= hi)
