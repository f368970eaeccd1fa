"""Kafka client for the pipeline: topic creation, Avro producer, and the bounded, durable-then-commit
consumer that lands a batch as Parquet. confluent-kafka (librdkafka) underneath."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.ingest.avro import DecodeError, decode, encode, subject_for_topic

log = logging.getLogger(__name__)
DLQ_SUFFIX = ".dlq"


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 3) -> None:
    """Create topics that do not exist yet (idempotent)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    if not wanted:
        return
    for topic, fut in admin.create_topics(wanted, operation_timeout=15).items():
        try:
            fut.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
            log.info("topic %s already exists", topic)


def _producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
        }
    )


def produce_records(bootstrap: str, topic: str, records: Iterable[dict[str, Any]], key_field: str) -> int:
    """Write records to ``topic`` as Confluent-framed Avro; returns the count acknowledged by the broker."""
    subject = subject_for_topic(topic)
    producer = _producer(bootstrap)
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    for rec in records:
        while True:
            try:
                producer.produce(
                    topic, key=str(rec[key_field]).encode(), value=encode(subject, rec), on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.5)
        n += 1
        if n % 5000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(f"{remaining} records not delivered to {topic}; first errors: {errors[:3]}")
    return n


@dataclass
class LandedBatch:
    """What one ingest run landed for one topic. XCom carries this (references, not data)."""

    topic: str
    uri: str
    records: int
    dead_lettered: int
    offsets: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe_run_id(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def consume_to_parquet(
    bootstrap: str,
    topic: str,
    group: str,
    landing_root: Path,
    run_id: str,
    max_records: int | None = None,
    timeout_s: float = 120.0,
) -> LandedBatch:
    """Consume what is on ``topic`` beyond the group's committed offsets, up to the end offsets seen at
    start (bounded), land it as Parquet partitioned by event date under a run-scoped directory, send
    undecodable records to ``<topic>.dlq`` with the reason, and only then commit the offsets."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    subject = subject_for_topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = consumer.committed(parts, timeout=10)
        start: dict[int, int] = {}
        end: dict[int, int] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            start[tp.partition] = tp.offset if tp.offset >= 0 else low
            end[tp.partition] = high
        pending = {p for p in start if start[p] < end[p]}
        assign = [TopicPartition(topic, p, start[p] if start[p] >= 0 else OFFSET_BEGINNING) for p in pending]
        rows: list[dict[str, Any]] = []
        dead: list[tuple[Any, str]] = []
        position = dict(start)
        if assign:
            consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        budget = max_records if max_records is not None else float("inf")
        while pending and len(rows) + len(dead) < budget:
            if time.monotonic() > deadline:
                raise TimeoutError(f"consume of {topic} did not reach end offsets {end} within {timeout_s}s")
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if p not in pending or offset >= end[p]:
                continue
            try:
                rec = decode(msg.value(), expected=subject)
                rec["_partition"], rec["_offset"] = p, offset
                rows.append(rec)
            except DecodeError as exc:
                dead.append((msg, str(exc)))
            position[p] = offset + 1
            if position[p] >= end[p]:
                pending.discard(p)
                consumer.incremental_unassign([TopicPartition(topic, p)])

        out_dir = landing_root / topic / f"run_id={safe_run_id(run_id)}"
        if rows or not out_dir.exists():
            _write_landing(rows, out_dir, pa, ds)
        offsets = {str(p): o for p, o in position.items()}
        (out_dir / "_offsets.json").write_text(json.dumps({"topic": topic, "group": group, "next": offsets}))
        if dead:
            _dead_letter(bootstrap, topic, dead)
        # The data (and the dead letters) are durable: now, and only now, commit.
        to_commit = [TopicPartition(topic, p, o) for p, o in position.items() if o > start.get(p, -1) and o >= 0]
        if to_commit:
            consumer.commit(offsets=to_commit, asynchronous=False)
        log.info("landed %d records from %s into %s (%d to DLQ)", len(rows), topic, out_dir, len(dead))
        return LandedBatch(topic, out_dir.as_uri(), len(rows), len(dead), offsets)
    finally:
        consumer.close()


def _write_landing(rows: list[dict[str, Any]], out_dir: Path, pa: Any, ds: Any) -> None:
    """Write rows partitioned by event_date into a temp dir, fsync, then swap it in atomically."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if rows:
        ts_field = "created_at" if "created_at" in rows[0] else "resolved_at"
        for r in rows:
            r["event_date"] = r[ts_field].astimezone(UTC).strftime("%Y-%m-%d")
        table = pa.Table.from_pylist(rows)
        ds.write_dataset(
            table,
            tmp,
            format="parquet",
            partitioning=["event_date"],
            partitioning_flavor="hive",
            existing_data_behavior="overwrite_or_ignore",
            basename_template="part-{i}.parquet",
        )
    for dirpath, _, files in os.walk(tmp):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)


def _dead_letter(bootstrap: str, topic: str, dead: list[tuple[Any, str]]) -> None:
    producer = _producer(bootstrap)
    for msg, reason in dead:
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.source", f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()),
            ("dlq.at", datetime.now(UTC).isoformat().encode()),
        ]
        producer.produce(topic + DLQ_SUFFIX, key=msg.key(), value=msg.value(), headers=headers)
    if producer.flush(30):
        raise RuntimeError(f"could not write {len(dead)} records to {topic}{DLQ_SUFFIX}")
