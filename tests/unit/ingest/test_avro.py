from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from mlplatform.ingest.avro import DecodeError, decode, encode, subject_for_topic

TICKET = {
    "ticket_id": "T1",
    "customer_id": "C000001",
    "plan": "pro",
    "channel": "email",
    "priority": 2,
    "subject": "s",
    "body": "b",
    "created_at": datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
}


def test_round_trip_in_confluent_wire_format():
    subject = subject_for_topic("support.tickets")
    payload = encode(subject, TICKET)
    assert payload[0] == 0
    assert struct.unpack(">I", payload[1:5])[0] == subject.schema_id
    assert decode(payload, expected=subject) == TICKET


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "tombstone"),
        (b"\x00\x00", "shorter than the 5-byte"),
        (b"\x01\x00\x00\x00\x01abc", "unknown magic byte 1"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown schema id 999"),
        (b"\x00\x00\x00\x00\x01\xff\xff\xff", "does not match schema"),
    ],
)
def test_bad_payloads_get_a_reason(payload, reason):
    with pytest.raises(DecodeError, match=reason):
        decode(payload, expected=subject_for_topic("support.tickets"))


def test_record_of_another_topic_is_rejected():
    outcome = {
        "ticket_id": "T1",
        "customer_id": "C1",
        "escalated": True,
        "resolved_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    payload = encode(subject_for_topic("support.outcomes"), outcome)
    with pytest.raises(DecodeError, match="does not belong on this topic"):
        decode(payload, expected=subject_for_topic("support.tickets"))


def test_unknown_topic_is_named():
    with pytest.raises(KeyError, match="no.such"):
        subject_for_topic("no.such")
