"""The data contracts as declared in include/schemas: parsed, validated, and named in errors."""

from __future__ import annotations

import json

import pytest

from mlplatform.ingest import poison, schemas
from mlplatform.ingest.avro import ColumnDecoder, DecodeError
from mlplatform.ingest.schemas import SchemaContractError, load_subjects, subject_for_topic

from .conftest import OUTCOMES, TICKETS, encode, ticket


def test_the_reference_contracts_and_their_current_versions(contracts):
    assert set(contracts) == {TICKETS, OUTCOMES}
    tickets = contracts[TICKETS]
    assert tickets.topic == "support.tickets"
    assert tickets.compatibility == "BACKWARD"
    assert [v.name for v in tickets.versions] == ["ticket_event.v1.avsc", "ticket_event.v2.avsc"]
    v1, v2 = (json.loads(tickets.schema_str(n)) for n in (1, 2))
    assert json.loads(tickets.schema_str()) == v2
    added = {f["name"] for f in v2["fields"]} - {f["name"] for f in v1["fields"]}
    assert added == {"language"}
    assert next(f for f in v2["fields"] if f["name"] == "language")["default"] == "en"
    assert not tickets.schema_str().endswith("\n")


def test_unknown_topic_names_the_subject_and_the_file(tmp_path):
    (tmp_path / "subjects.yaml").write_text("{}")
    with pytest.raises(KeyError, match=r"no\.such-value.*subjects\.yaml"):
        subject_for_topic("no.such", tmp_path)


@pytest.mark.parametrize(
    ("yaml_text", "files", "message"),
    [
        ("a-value: {versions: []}", {}, "lists no schema versions"),
        ("a-value: {versions: [gone.avsc]}", {}, "gone.avsc, which does not exist"),
        ("a-value: {versions: [bad.avsc]}", {"bad.avsc": '{"type": "record"}'}, "not a valid Avro schema"),
    ],
)
def test_malformed_contracts_are_refused_with_the_reason(tmp_path, yaml_text, files, message):
    (tmp_path / "subjects.yaml").write_text(yaml_text)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SchemaContractError, match=message):
        load_subjects(tmp_path)


@pytest.mark.parametrize(("kind", "decode_kind"), list(poison.KINDS.items()))
def test_each_poison_class_is_refused_as_its_kind(contracts, lookup, kind, decode_kind):
    good = encode(contracts[TICKETS].schema_str(1), 1, ticket(5))
    outcome = {"ticket_id": "T5", "customer_id": "C1", "escalated": False, "resolved_at": ticket()["created_at"]}
    other = encode(contracts[OUTCOMES].schema_str(), 3, outcome)
    dec = ColumnDecoder(TICKETS, contracts[TICKETS].schema_str(), lookup)
    with pytest.raises(DecodeError) as err:
        dec.decode(poison.poison_value(kind, good, other), 0, None)
    assert err.value.kind == decode_kind


def test_interleave_is_seeded_and_cycles_the_classes():
    values = [(b"k", b"v")] * 100
    a, counts = poison.interleave(values, 0.08, 7, b"\0\0\0\0\1" + b"x" * 20, b"\0\0\0\0\3y")
    b, _ = poison.interleave(values, 0.08, 7, b"\0\0\0\0\1" + b"x" * 20, b"\0\0\0\0\3y")
    assert a == b
    assert len(a) == 108
    assert counts == dict.fromkeys(poison.KINDS, 2)


def test_a_registry_pointer_is_named_as_the_field_it_points_at():
    spec = schemas.load_subjects(schemas.SCHEMA_DIR)["support.tickets-value"]
    schema = json.loads(spec.schema_str())
    index = next(i for i, f in enumerate(schema["fields"]) if f["name"] == "priority")
    assert schemas.field_path(schema, f"/fields/{index}/type") == "priority"
    nested = {"type": "record", "name": "R", "fields": [{"name": "a", "type": schema}]}
    assert schemas.field_path(nested, f"/fields/0/type/fields/{index}/type") == "a.priority"
    assert schemas.field_path(schema, "/name") is None
