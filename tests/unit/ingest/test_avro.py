"""The decoder: Confluent-framed Avro into Arrow columns, resolved to the current contract, with a reason
for every record it refuses."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import fastavro
import pyarrow as pa
import pytest
from confluent_kafka import KafkaError

from mlplatform.ingest.avro import ColumnDecoder, DecodeError, StaticLookup, frame, strip_logical_types

from .conftest import OUTCOMES, TICKETS, FakeError, Msg, encode, ticket


@pytest.fixture
def decoder(contracts, lookup):
    return ColumnDecoder(TICKETS, contracts[TICKETS].schema_str(), lookup)


def test_v1_and_v2_records_resolve_to_the_current_contract(decoder, contracts):
    t = contracts[TICKETS]
    decoder.decode(encode(t.schema_str(1), 1, ticket(1)), 10, 1000)
    decoder.decode(encode(t.schema_str(2), 2, ticket(2, language="de")), 11, None)
    table = decoder.flush()
    assert table.column_names[:9] == [f["name"] for f in json.loads(t.schema_str())["fields"]]
    assert table.column("language").to_pylist() == ["en", "de"]  # v1: the reader's default
    assert table.column("ticket_id").to_pylist() == ["T1", "T2"]
    assert table.column("_offset").to_pylist() == [10, 11]
    assert table.column("_schema_id").to_pylist() == [1, 2]
    assert table.column("_timestamp").to_pylist()[1] is None
    assert table.schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
    assert table.column("created_at").to_pylist()[0] == datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
    assert decoder.take_schema_ids() == {1, 2}
    assert decoder.take_schema_ids() == set()
    assert len(decoder) == 0


def test_fast_plan_equals_fastavro_resolution(decoder, contracts):
    """Decoding v1 with the writer schema plus column defaults gives exactly what Avro resolution gives."""
    t = contracts[TICKETS]
    records = [ticket(i, priority=1 + i % 4) for i in range(50)]
    for i, r in enumerate(records):
        decoder.decode(encode(t.schema_str(1), 1, r), i, None)
    ours = decoder.flush().select([f["name"] for f in json.loads(t.schema_str())["fields"]]).to_pylist()
    writer = fastavro.parse_schema(json.loads(t.schema_str(1)))
    reader = fastavro.parse_schema(json.loads(t.schema_str(2)))
    theirs = []
    for r in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, r)
        buf.seek(0)
        theirs.append(fastavro.schemaless_reader(buf, writer, reader))
    assert ours == theirs


def test_type_promotion_takes_fastavros_resolution_path(contracts):
    """A writer whose field type differs (int where the reader has long) is resolved by fastavro itself."""
    reader = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}]}
    writer = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}, {"name": "s", "type": "string"}]}
    lk = StaticLookup({7: ("r-value", json.dumps(writer))})
    dec = ColumnDecoder("r-value", json.dumps(reader), lk)
    dec.decode(encode(json.dumps(writer), 7, {"n": 5, "s": "x"}), 0, None)
    assert dec.plan(7).resolved is True
    assert dec.flush().select(["n", "s"]).to_pylist() == [{"n": 5, "s": "x"}]


@pytest.mark.parametrize(
    ("payload", "kind", "reason"),
    [
        (None, "tombstone", "tombstone"),
        (b"\x00\x00", "truncated", "shorter than the 5-byte"),
        (b'{"json": true}', "bad_magic", "unknown magic byte 123"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown_schema_id", "unknown schema id 999"),
        (b"\x00\x00\x00\x00\x01\xff\xff\xff", "bad_body", "does not match writer schema id 1"),
    ],
)
def test_poison_gets_a_kind_and_a_reason(decoder, payload, kind, reason):
    with pytest.raises(DecodeError, match=reason) as err:
        decoder.decode(payload, 0, None)
    assert err.value.kind == kind
    assert len(decoder) == 0


def test_truncated_body_and_trailing_bytes_are_refused(decoder, contracts):
    good = encode(contracts[TICKETS].schema_str(1), 1, ticket(3))
    with pytest.raises(DecodeError) as short:
        decoder.decode(good[: len(good) - 4], 0, None)
    with pytest.raises(DecodeError, match="3 trailing bytes") as long:
        decoder.decode(good + b"xyz", 1, None)
    assert short.value.kind == long.value.kind == "bad_body"
    decoder.decode(good, 2, None)
    assert decoder.flush().column("_offset").to_pylist() == [2]


def test_a_record_of_another_subject_is_the_wrong_subject(decoder, contracts):
    outcome = {
        "ticket_id": "T1",
        "customer_id": "C1",
        "escalated": True,
        "resolved_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    with pytest.raises(DecodeError, match=f"registered under {OUTCOMES}, not {TICKETS}") as err:
        decoder.decode(encode(contracts[OUTCOMES].schema_str(), 3, outcome), 0, None)
    assert err.value.kind == "wrong_subject"


def test_decode_batch_splits_good_poison_and_eof(decoder, contracts):
    good = encode(contracts[TICKETS].schema_str(1), 1, ticket(1))
    msgs = [Msg(good, 0), Msg(b"not avro", 1), Msg(good, 2), Msg(None, 3, error=FakeError(KafkaError._PARTITION_EOF))]
    poison, eof = decoder.decode_batch(msgs)
    assert eof == 3
    assert [(m.offset(), e.kind) for m, e in poison] == [(1, "bad_magic")]
    assert decoder.flush().column("_offset").to_pylist() == [0, 2]


def test_other_consumer_errors_raise(decoder):
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException):
        decoder.decode_batch([Msg(None, 0, error=KafkaError(KafkaError._TRANSPORT))])


def test_strip_logical_types_keeps_the_base_type():
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    assert strip_logical_types(schema)["fields"][0]["type"] == "long"


def test_frame_is_the_confluent_header():
    assert frame(258, b"x") == b"\x00\x00\x00\x01\x02x"


def test_unsupported_reader_field_is_named():
    reader = {"type": "record", "name": "R", "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}]}
    with pytest.raises(ValueError, match="'tags'"):
        ColumnDecoder("r-value", json.dumps(reader), StaticLookup({}))
