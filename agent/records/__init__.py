"""Typed events to schema-v1 records (plain dicts), and the schema itself."""
