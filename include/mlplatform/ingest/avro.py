"""Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro binary), decoded straight into
Arrow columns.

Writer schemas come from the Schema Registry by id (``RegistryLookup``: confluent-kafka's client) and are
parsed once per id. The reader schema is the project's current schema for the topic's subject, so records
written with an older compatible version resolve to today's shape.

Speed without a home-made Avro reader: fastavro decodes every record. Per writer id a *plan* is made once:
when each reader field is either present in the writer with the same type or absent with a default (the
usual BACKWARD evolution), the record is decoded with the writer schema alone and the defaults are filled
per column, which gives exactly what Avro resolution gives at half its cost. Any other difference (type
promotion, aliases, enum defaults) decodes through fastavro's own resolution. Logical types are decoded
as their raw values (epoch millis, days) and typed by Arrow, which avoids a Python datetime per field.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from dataclasses import dataclass
from typing import Any, Protocol

MAGIC = 0
HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """A record that cannot be decoded. ``kind`` is the reason class counted per run; the message is what
    goes to the DLQ header, and says what a person can do about it."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class UnknownSchemaError(LookupError):
    """The registry does not know this schema id (a 404, not an outage)."""


class SchemaLookup(Protocol):
    def schema_str(self, schema_id: int) -> str: ...

    def subjects(self, schema_id: int) -> set[str]: ...


class RegistryLookup:
    """Writer schemas by id from a Confluent-compatible registry. A 404 is an unknown id (poison); any
    other failure is an outage and propagates, so the task retries instead of dead-lettering good data."""

    def __init__(self, sr: Any) -> None:
        self.sr = sr

    def schema_str(self, schema_id: int) -> str:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return str(self.sr.get_schema(schema_id).schema_str)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaError(schema_id) from None
            raise

    def subjects(self, schema_id: int) -> set[str]:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return {v.subject for v in self.sr.get_schema_versions(schema_id)}
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaError(schema_id) from None
            raise


class StaticLookup:
    """A fixed id -> (subject, schema) table, for tools and tests that run without a registry."""

    def __init__(self, table: dict[int, tuple[str, str]]) -> None:
        self.table = table

    def schema_str(self, schema_id: int) -> str:
        if schema_id not in self.table:
            raise UnknownSchemaError(schema_id)
        return self.table[schema_id][1]

    def subjects(self, schema_id: int) -> set[str]:
        if schema_id not in self.table:
            raise UnknownSchemaError(schema_id)
        return {self.table[schema_id][0]}


# ----------------------------------------------------------------------------------------- schema helpers


def strip_logical_types(schema: Any) -> Any:
    """A copy of an Avro schema (JSON form) with logical types removed: values decode as their base type."""
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        out = {k: strip_logical_types(v) for k, v in schema.items() if k not in ("logicalType", "precision", "scale")}
        if "logicalType" in schema and isinstance(schema.get("type"), str) and schema["type"] not in ("fixed",):
            return out["type"]
        return out
    return schema


def _canonical(schema: Any) -> str:
    """A comparable form of a field type (named types compared by full content)."""
    return json.dumps(strip_docs(schema), sort_keys=True)


def strip_docs(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strip_docs(s) for s in schema]
    if isinstance(schema, dict):
        return {k: strip_docs(v) for k, v in schema.items() if k not in ("doc", "aliases", "default", "order")}
    return schema


def arrow_type(avro_type: Any, field_name: str) -> tuple[Any, bool]:
    """(Arrow type, nullable) of a reader field's Avro type. Raises ValueError naming the field when the
    type has no flat Arrow column (nested records, arrays, maps): those need a reader of their own."""
    import pyarrow as pa

    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) == 1 and len(avro_type) == 2:
            return arrow_type(branches[0], field_name)[0], True
        raise ValueError(f"field {field_name!r}: unions other than [null, T] are not supported in landing files")
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        base = avro_type.get("type")
        if logical == "timestamp-millis":
            return pa.timestamp("ms", tz="UTC"), False
        if logical == "timestamp-micros":
            return pa.timestamp("us", tz="UTC"), False
        if logical == "local-timestamp-millis":
            return pa.timestamp("ms"), False
        if logical == "local-timestamp-micros":
            return pa.timestamp("us"), False
        if logical == "date":
            return pa.date32(), False
        if base == "enum":
            return pa.string(), False
        if base == "fixed":
            return pa.binary(int(avro_type["size"])), False
        if isinstance(base, str) and base not in ("record", "array", "map"):
            return arrow_type(base, field_name)
        raise ValueError(f"field {field_name!r}: Avro type {base!r} has no flat Arrow column")
    primitive = {
        "string": pa.string(),
        "bytes": pa.binary(),
        "int": pa.int32(),
        "long": pa.int64(),
        "float": pa.float32(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
    }
    if avro_type in primitive:
        return primitive[avro_type], False
    raise ValueError(f"field {field_name!r}: Avro type {avro_type!r} is not supported in landing files")


META_FIELDS = ("_partition", "_offset", "_timestamp", "_schema_id")


def landing_schema(reader_schema: dict[str, Any]) -> Any:
    """The Arrow schema of a landing file: the reader schema's fields, then the Kafka coordinates."""
    import pyarrow as pa

    fields = []
    for f in reader_schema["fields"]:
        typ, nullable = arrow_type(f["type"], f["name"])
        fields.append(pa.field(f["name"], typ, nullable=nullable))
    fields += [
        pa.field("_partition", pa.int32(), nullable=False),
        pa.field("_offset", pa.int64(), nullable=False),
        pa.field("_timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("_schema_id", pa.int32(), nullable=False),
    ]
    return pa.schema(fields, metadata={"avro.reader.schema": json.dumps(reader_schema)})


# --------------------------------------------------------------------------------------------- the decoder


@dataclass
class _Plan:
    schema_id: int
    writer: Any  # parsed writer schema, logical types stripped
    reader: Any  # parsed reader schema when fastavro must resolve, else None
    defaults: dict[str, Any] | None  # reader fields the writer lacks, with their defaults
    resolved: bool  # True: fastavro resolution (exact, slower); False: writer decode + defaults


class ColumnDecoder:
    """Decodes Confluent-framed Avro records of one subject into column buffers; ``flush()`` returns them
    as an Arrow table in the landing schema. One decoder per partition worker (not thread-safe)."""

    def __init__(self, subject: str, reader_schema_str: str, lookup: SchemaLookup) -> None:
        import fastavro

        self.subject = subject
        self.lookup = lookup
        self.reader_json = json.loads(reader_schema_str)
        self.arrow_schema = landing_schema(self.reader_json)
        self._reader_stripped = strip_logical_types(self.reader_json)
        self._reader_parsed = fastavro.parse_schema(copy.deepcopy(self._reader_stripped))
        self._fields = [f["name"] for f in self.reader_json["fields"]]
        self._plans: dict[int, _Plan] = {}
        self._bad: dict[int, DecodeError] = {}
        self._read = fastavro.schemaless_reader
        self._ids_flushed: set[int] = set()
        self.partition = 0
        self.reset()

    def reset(self) -> None:
        self.columns: list[list[Any]] = [[] for _ in self._fields]
        self._sinks = [(col.append, name) for col, name in zip(self.columns, self._fields, strict=True)]
        self.offsets: list[int] = []
        self.timestamps: list[int | None] = []
        self.schema_ids: list[int] = []

    def __len__(self) -> int:
        return len(self.offsets)

    def take_schema_ids(self) -> set[int]:
        """Writer schema ids of the rows decoded since the last call (for the manifest entry)."""
        ids = self._ids_flushed | set(self.schema_ids)
        self._ids_flushed = set()
        return ids

    def _plan(self, schema_id: int) -> _Plan | DecodeError:
        import fastavro

        try:
            subjects = self.lookup.subjects(schema_id)
            writer_json = json.loads(self.lookup.schema_str(schema_id))
        except UnknownSchemaError:
            return DecodeError(
                "unknown_schema_id",
                f"unknown schema id {schema_id}: the registry has no such schema (written against another "
                "registry, or the subject was deleted)",
            )
        if self.subject not in subjects:
            return DecodeError(
                "wrong_subject",
                f"schema id {schema_id} is registered under {', '.join(sorted(subjects))}, not {self.subject}: "
                "a record of another data contract on this topic",
            )
        writer = fastavro.parse_schema(copy.deepcopy(strip_logical_types(writer_json)))
        writer_fields = {f["name"]: f for f in writer_json.get("fields", [])}
        defaults: dict[str, Any] = {}
        simple = writer_json.get("type") == "record" and writer_json.get("name") == self.reader_json.get("name")
        for rf in self.reader_json["fields"]:
            wf = writer_fields.get(rf["name"])
            if rf.get("aliases"):
                simple = False
            elif wf is not None and _canonical(wf["type"]) == _canonical(rf["type"]):
                continue
            elif wf is None and "default" in rf:
                defaults[rf["name"]] = rf["default"]
            else:
                simple = False
        if simple:
            return _Plan(schema_id, writer, None, defaults or None, resolved=False)
        return _Plan(schema_id, writer, self._reader_parsed, None, resolved=True)

    def plan(self, schema_id: int) -> _Plan:
        """The cached decode plan of a writer schema id, or the DecodeError its records get."""
        plan = self._plans.get(schema_id)
        if plan is None:
            if schema_id in self._bad:
                raise self._bad[schema_id]
            made = self._plan(schema_id)
            if isinstance(made, DecodeError):
                self._bad[schema_id] = made
                raise made
            plan = self._plans[schema_id] = made
        return plan

    def decode(self, value: bytes | None, offset: int, timestamp: int | None) -> None:
        """Append one record, or raise DecodeError with its reason."""
        if value is None:
            raise DecodeError("tombstone", "null value (tombstone) on a data topic")
        n = len(value)
        if n < 5:
            raise DecodeError("truncated", f"payload of {n} bytes is shorter than the 5-byte Confluent header")
        magic, schema_id = HEADER.unpack_from(value)
        if magic != MAGIC:
            raise DecodeError("bad_magic", f"unknown magic byte {magic} (expected {MAGIC}): not Confluent-framed Avro")
        plan = self._plans.get(schema_id) or self.plan(schema_id)
        buf = io.BytesIO(value)
        buf.seek(5)
        try:
            rec = self._read(buf, plan.writer, plan.reader)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types for corrupt or short bodies
            raise DecodeError(
                "bad_body", f"Avro body does not match writer schema id {schema_id}: {type(exc).__name__}: {exc}"
            ) from None
        if buf.tell() != n:
            raise DecodeError(
                "bad_body", f"{n - buf.tell()} trailing bytes after the record (writer schema id {schema_id})"
            )
        if plan.defaults:
            rec.update(plan.defaults)
        for append, name in self._sinks:
            append(rec[name])
        self.offsets.append(offset)
        self.timestamps.append(timestamp)
        self.schema_ids.append(schema_id)

    def decode_batch(self, msgs: list[Any]) -> tuple[list[tuple[Any, DecodeError]], int | None]:
        """Decode a consume() batch of one partition: returns the poison (message, reason) pairs and the
        partition-EOF offset if the batch carried one. The hot loop: everything it touches is a local."""
        from confluent_kafka import KafkaError, KafkaException

        poison: list[tuple[Any, DecodeError]] = []
        eof: int | None = None
        plans, read, unpack = self._plans, self._read, HEADER.unpack_from
        sinks, offsets, stamps, ids = self._sinks, self.offsets, self.timestamps, self.schema_ids
        bytes_io = io.BytesIO
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof = msg.offset()
                    continue
                raise KafkaException(err)
            value = msg.value()
            plan = None
            if value is not None and len(value) > 5:
                magic, schema_id = unpack(value)
                plan = plans.get(schema_id) if magic == MAGIC else None
            if plan is None:  # the slow path names the reason (or builds the plan of a new schema id)
                try:
                    ts_type, ts = msg.timestamp()
                    self.decode(value, msg.offset(), ts if ts_type else None)
                except DecodeError as exc:
                    poison.append((msg, exc))
                continue
            buf = bytes_io(value)
            buf.seek(5)
            try:
                rec = read(buf, plan.writer, plan.reader)
            except Exception as exc:  # noqa: BLE001 - fastavro raises many types for corrupt or short bodies
                poison.append(
                    (msg, DecodeError("bad_body", f"Avro body does not match writer schema id {schema_id}: {exc!r}"))
                )
                continue
            if buf.tell() != len(value):
                poison.append(
                    (msg, DecodeError("bad_body", f"{len(value) - buf.tell()} trailing bytes after the record"))
                )
                continue
            if plan.defaults:
                rec.update(plan.defaults)
            for append, name in sinks:
                append(rec[name])
            offsets.append(msg.offset())
            ts_type, ts = msg.timestamp()
            stamps.append(ts if ts_type else None)
            ids.append(schema_id)
        return poison, eof

    def flush(self) -> Any:
        """The buffered rows as an Arrow table (landing schema); the buffers start empty again."""
        import pyarrow as pa

        n = len(self.offsets)
        arrays = [pa.array(col, type=self.arrow_schema.field(i).type) for i, col in enumerate(self.columns)]
        arrays += [
            pa.array([self.partition] * n, pa.int32()),
            pa.array(self.offsets, pa.int64()),
            pa.array(self.timestamps, pa.timestamp("ms", tz="UTC")),
            pa.array(self.schema_ids, pa.int32()),
        ]
        table = pa.Table.from_arrays(arrays, schema=self.arrow_schema)
        self._ids_flushed.update(self.schema_ids)
        self.reset()
        return table


def frame(schema_id: int, body: bytes) -> bytes:
    """Confluent framing of an Avro body (used by tools that write pre-encoded records)."""
    return HEADER.pack(MAGIC, schema_id) + body
