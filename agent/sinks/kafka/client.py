"""kafka-python's network client, with one fix for recovering from a full outage.

In kafka-python 3.0.12, `maybe_connect()` and `ready()` catch only
NodeNotReadyError, but the connection manager raises UnknownBrokerIdError
for a leader that the last metadata response did not list (as happens while
brokers come back one by one). The producer's sender loop then fails on every
pass before it polls, so metadata is never refreshed and batches wait until
their delivery timeout. Here that error asks for fresh metadata instead.
Passed to KafkaProducer through its documented `kafka_client` option.

close_now() closes a producer without waiting for what it holds.
"""

from __future__ import annotations

from kafka import errors as kerr
from kafka.net.compat import KafkaNetClient


class RecoveringClient(KafkaNetClient):
    def maybe_connect(self, node_id, **kwargs):
        try:
            return super().maybe_connect(node_id, **kwargs)
        except kerr.UnknownBrokerIdError:
            self.cluster.request_update()
            return None

    def ready(self, node_id, **kwargs):
        try:
            return super().ready(node_id, **kwargs)
        except kerr.UnknownBrokerIdError:
            self.cluster.request_update()
            return False


def close_now(producer, join_s: float = 5.0) -> None:
    """Closes a producer without waiting for its records (they are spooled).

    kafka-python 3.0.12's close(timeout=0) flushes first, and with records
    pending that raises before it force-closes: its network thread lived on,
    reconnecting and logging, for the life of the process. So the close is
    forced here (through its sender, as close() itself would), then
    completed."""
    try:
        producer.close(timeout=0)
        return
    except Exception:
        pass
    sender = getattr(producer, "_sender", None)
    if sender is None:
        return
    sender.force_close()  # fails what it still holds, so the next flush returns
    sender.join(join_s)
    try:
        producer.close(timeout=0)
    except Exception:
        pass
