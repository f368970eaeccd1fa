from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from mlplatform.ingest.avro import StaticLookup, frame
from mlplatform.ingest.schemas import SCHEMA_DIR, load_subjects

TICKETS = "support.tickets-value"
OUTCOMES = "support.outcomes-value"


@pytest.fixture(scope="session")
def contracts():
    return load_subjects(SCHEMA_DIR)


@pytest.fixture(scope="session")
def lookup(contracts):
    """ids 1, 2: ticket v1, v2; id 3: outcome v1 (a registry's answers, without the registry)."""
    t, o = contracts[TICKETS], contracts[OUTCOMES]
    return StaticLookup({1: (TICKETS, t.schema_str(1)), 2: (TICKETS, t.schema_str(2)), 3: (OUTCOMES, o.schema_str())})


def ticket(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "ticket_id": f"T{i}",
        "customer_id": "C000001",
        "plan": "pro",
        "channel": "email",
        "priority": 2,
        "subject": "s",
        "body": "b" * (i % 7 + 1),
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
        **extra,
    }


def encode(schema_str: str, schema_id: int, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(schema_str)), record)
    return frame(schema_id, buf.getvalue())


class FakeError:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code


class Msg:
    """The slice of confluent_kafka.Message the decoder reads (real Messages cannot be built in Python)."""

    def __init__(self, value: bytes | None, offset: int, partition: int = 0, error: Any = None) -> None:
        self._value, self._offset, self._partition, self._error = value, offset, partition, error

    def error(self) -> Any:
        return self._error

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_767_312_000_000 + self._offset)
