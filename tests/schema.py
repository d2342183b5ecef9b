"""The public record schema, loaded once for every test that validates."""

import json
from functools import cache
from pathlib import Path

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema" / "record-v1.schema.json"


@cache
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(record: dict) -> None:
    errors = sorted(validator().iter_errors(record), key=str)
    assert not errors, f"record violates schema v1: {errors[0].message} in {record}"
