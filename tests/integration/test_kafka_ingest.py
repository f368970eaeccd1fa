"""Ingest against the real broker: bounded consume, commit-after-durable, DLQ with reasons."""

from __future__ import annotations

import uuid

import pandas as pd
from confluent_kafka import Consumer, Producer

from mlplatform.ingest.kafka import DLQ_SUFFIX, consume_to_parquet
from mlplatform.pipeline.stages import produce_events

SEED = uuid.uuid4().int % 5000  # fresh events each session: the topics outlive a test run


def _read_landing(uri_dir) -> pd.DataFrame:
    files = sorted(uri_dir.rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_offsets_commit_only_what_landed_and_poison_goes_to_dlq(settings, tmp_path):
    topic, group = settings.tickets_topic, f"it-{uuid.uuid4().hex[:8]}"
    produce_events(events=120, seed=SEED + 1)
    first = consume_to_parquet(settings.kafka_bootstrap, topic, group, tmp_path, "run-a")
    assert first.records >= 120
    landed = _read_landing(tmp_path / topic / "run_id=run-a")
    assert len(landed) == first.records
    assert {"event_date"} <= set(
        p.name.split("=")[0] for p in (tmp_path / topic / "run_id=run-a").iterdir() if p.is_dir()
    )

    produce_events(events=75, seed=SEED + 2)
    second = consume_to_parquet(settings.kafka_bootstrap, topic, group, tmp_path, "run-b")
    assert second.records == 75  # exactly what arrived since the committed offsets
    assert second.dead_lettered == 0

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(topic, key=b"C000001", value=b"not avro at all")
    producer.produce(topic, key=b"C000002", value=b"\x00\x00\x00\x00\x07oops")
    producer.flush(10)
    third = consume_to_parquet(settings.kafka_bootstrap, topic, group, tmp_path, "run-c")
    assert third.records == 0
    assert third.dead_lettered == 2
    fourth = consume_to_parquet(settings.kafka_bootstrap, topic, group, tmp_path, "run-d")
    assert fourth.records == fourth.dead_lettered == 0

    dlq = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{group}-dlq", "auto.offset.reset": "earliest"}
    )
    dlq.subscribe([topic + DLQ_SUFFIX])
    reasons = {}
    for _ in range(60):
        msg = dlq.poll(1.0)
        if msg is None or msg.error():
            if len(reasons) >= 2:
                break
            continue
        headers = dict(msg.headers() or [])
        reasons[msg.value()] = headers["dlq.reason"].decode()
        assert headers["dlq.source"].decode().startswith(topic + "/")
    dlq.close()
    assert "magic byte" in reasons[b"not avro at all"]
    assert "unknown schema id 7" in reasons[b"\x00\x00\x00\x00\x07oops"]


def test_retry_of_same_run_rewrites_the_same_landing(settings, tmp_path):
    topic, group = settings.outcomes_topic, f"it-{uuid.uuid4().hex[:8]}"
    produce_events(events=60, seed=SEED + 3)
    batch = consume_to_parquet(settings.kafka_bootstrap, topic, group, tmp_path, "run-x")
    again = consume_to_parquet(settings.kafka_bootstrap, topic, group, tmp_path, "run-x")  # an Airflow retry
    assert again.records == 0
    assert len(_read_landing(tmp_path / topic / "run_id=run-x")) == batch.records
