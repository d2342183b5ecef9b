"""What feeds the "port exhaustion" diagnosis: TIME_WAIT sockets per
destination and the ephemeral port range, of any network namespace.

    timewait_counts("/run/netns/x")  -> {(local, remote, rport): n}
    ephemeral_range("/proc/4242/ns/net") -> (32768, 60999)

Every reader takes netns: a namespace path (/proc/<pid>/ns/net,
/run/netns/<name>), or None for the agent's own. Another namespace is read
from a short-lived thread that enters it (`in_netns`); the caller's namespace
never changes. Failures raise PortReadError naming the namespace.
"""

from .netns import PortReadError, in_netns
from .portrange import ephemeral_range, parse_port_list, parse_port_range, reserved_ports, usable_ports
from .timewait import timewait_counts, timewait_total

__all__ = [
    "PortReadError",
    "ephemeral_range",
    "in_netns",
    "parse_port_list",
    "parse_port_range",
    "reserved_ports",
    "timewait_counts",
    "timewait_total",
    "usable_ports",
]
