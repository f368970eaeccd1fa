"""Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro binary) with fastavro.

Schemas are the data contracts in ``include/schemas``. Without a schema registry the subject -> id table
``include/schemas/subjects.json`` fixes the ids, so the bytes on the topic are exactly what a Confluent
``AvroSerializer`` would write for a registry holding those ids.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
MAGIC = 0
_HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """A record that cannot be decoded; the reason goes to the DLQ with the record."""


@dataclass(frozen=True)
class Subject:
    name: str
    schema_id: int
    schema: Any  # parsed fastavro schema

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.schema["fields"]]


@lru_cache(maxsize=1)
def subjects() -> dict[str, Subject]:
    table = json.loads((SCHEMA_DIR / "subjects.json").read_text())
    out = {}
    for name, entry in table.items():
        if name.startswith("_"):
            continue
        raw = json.loads((SCHEMA_DIR / entry["schema"]).read_text())
        out[name] = Subject(name, int(entry["id"]), fastavro.parse_schema(raw))
    return out


def subject_for_topic(topic: str) -> Subject:
    try:
        return subjects()[f"{topic}-value"]
    except KeyError as exc:
        raise KeyError(f"no Avro schema registered for topic {topic!r} (subject {topic}-value)") from exc


def _by_id() -> dict[int, Subject]:
    return {s.schema_id: s for s in subjects().values()}


def encode(subject: Subject, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, subject.schema_id))
    fastavro.schemaless_writer(buf, subject.schema, record)
    return buf.getvalue()


def decode(payload: bytes | None, expected: Subject | None = None) -> dict[str, Any]:
    """Decode one framed record, raising DecodeError with a reason a person can act on."""
    if payload is None:
        raise DecodeError("null value (tombstone) on a data topic")
    if len(payload) < _HEADER.size:
        raise DecodeError(f"payload of {len(payload)} bytes is shorter than the 5-byte Confluent header")
    magic, schema_id = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise DecodeError(f"unknown magic byte {magic} (expected {MAGIC}): not Confluent-framed Avro")
    subject = _by_id().get(schema_id)
    if subject is None:
        raise DecodeError(f"unknown schema id {schema_id}")
    if expected is not None and subject.schema_id != expected.schema_id:
        raise DecodeError(f"schema id {schema_id} ({subject.name}) does not belong on this topic ({expected.name})")
    try:
        record = fastavro.schemaless_reader(io.BytesIO(payload[_HEADER.size :]), subject.schema, None)
    except Exception as exc:  # noqa: BLE001 - fastavro raises many types for corrupt bytes
        raise DecodeError(f"Avro body does not match schema {subject.name} v{schema_id}: {exc!r}") from exc
    if not isinstance(record, dict):
        raise DecodeError(f"schema {subject.name} is not a record schema")
    return record
