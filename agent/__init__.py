"""connscope: an eBPF agent that traces TCP connection attempts and connections.

Data flows one way through the packages:
kernel (compile, probe, attach, poll) -> decode (bytes to typed events)
-> records (events to schema-v1 dicts) -> sinks (JSON lines, table) -> cli.
"""

__version__ = "0.1.0"
