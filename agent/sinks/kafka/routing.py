"""Which topic and key a record goes to (kafka.topic, kafka.key), for one
record's dict and for a batch of encoded records."""

from __future__ import annotations

from .settings import KafkaSettings


def make_router(settings: KafkaSettings):
    """record dict -> (topic, key bytes), per `topic` and `key`."""
    template, by_pid = settings.topic, settings.key == "host_pid"
    per_type = "{type}" in template

    def route(rec: dict) -> tuple[str, bytes]:
        topic = template.replace("{type}", rec.get("type", "unknown")) if per_type else template
        host = rec.get("host", "")
        return topic, (f"{host}/{rec.get('pid', 0)}" if by_pid else host).encode()
    return route


def make_batch_router(settings: KafkaSettings):
    """(host, record types by event, the events) of a batch -> (topics, keys)
    per record, as make_router routes each record's dict."""
    template, by_pid = settings.topic, settings.key == "host_pid"
    per_type = "{type}" in template

    def route(host: str, type_names: dict, events: list) -> tuple[list[str], list[bytes]]:
        n = len(events)
        if per_type:
            topics = [template.replace("{type}", type_names[ev.type]) for ev in events]
        else:
            topics = [template] * n
        keys = [f"{host}/{ev.pid}".encode() for ev in events] if by_pid else [host.encode()] * n
        return topics, keys
    return route
