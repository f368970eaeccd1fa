"""Poison records for demonstrations and tests: one of each class the ingest must dead-letter, built from
real records so that each breaks exactly one rule."""

from __future__ import annotations

import random

from mlplatform.ingest.avro import frame

# class -> the DecodeError kind the ingest reports for it
KINDS = {
    "bad_magic": "bad_magic",  # not Confluent-framed (e.g. JSON written by mistake)
    "unknown_schema_id": "unknown_schema_id",  # framed with an id the registry does not hold
    "truncated_body": "bad_body",  # the Avro body was cut short
    "wrong_subject": "wrong_subject",  # a record of another topic's contract
}
UNKNOWN_ID = 2_000_000_000


def poison_value(kind: str, good: bytes, other_subject: bytes) -> bytes:
    """One poison payload of ``kind``, made from a good record of the topic and one of another subject."""
    if kind == "bad_magic":
        return b'{"ticket_id": "T-json", "note": "JSON, not Avro"}'
    if kind == "unknown_schema_id":
        return frame(UNKNOWN_ID, good[5:])
    if kind == "truncated_body":
        return good[: 5 + max(1, (len(good) - 5) // 3)]
    if kind == "wrong_subject":
        return other_subject
    raise ValueError(f"unknown poison kind {kind!r}; known: {', '.join(KINDS)}")


def interleave(
    values: list[tuple[bytes, bytes]], rate: float, seed: int, good: bytes, other_subject: bytes
) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    """Insert ``rate`` x len(values) poison records at seeded positions, cycling through the classes."""
    rng = random.Random(seed)
    n = round(len(values) * rate)
    kinds = list(KINDS)
    out = list(values)
    counts = dict.fromkeys(kinds, 0)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        out.insert(rng.randrange(len(out) + 1), (f"poison-{i}".encode(), poison_value(kind, good, other_subject)))
        counts[kind] += 1
    return out, counts
