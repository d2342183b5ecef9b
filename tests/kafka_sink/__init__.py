"""Kafka sink tests and their fixture: librdkafka's mock cluster (mockcluster.py).

Not named tests/kafka: tests/conftest.py puts tests/ first on sys.path, where a
"kafka" package would shadow kafka-python.
"""
