"""The Kafka sink: records to Kafka with kafka-python, an on-disk spool for
outages, and every drop counted (see README, "Kafka").

`KafkaSettings` is the [kafka] configuration table, `KafkaSink` the sink,
`probe()` the reachability check for `connscope check` and start-up.
"""

from .probe import probe
from .settings import KafkaSettings
from .sink import KafkaSink

__all__ = ["KafkaSettings", "KafkaSink", "probe"]
