"""Kafka for the pipeline: topics, the Avro producer (through the Schema Registry) and the bounded,
exactly-once ingest of a topic into its landing zone (one worker process per partition, up to the cores).

``ingest`` is what the Airflow task and ``mlp ingest`` run. It returns the counts of the run (landed,
dead-lettered by reason, lag left), and raises ``DeadLetterAlert`` after committing when the run's DLQ
share passes the threshold, so a batch of poison is never a green task.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlplatform.ingest.consume import DLQ_SUFFIX, IngestError, PartitionJob, ingest_partition, kafka_call
from mlplatform.ingest.landing import Landing
from mlplatform.ingest.schemas import RegistryConfig, SubjectSpec, subject_for_topic

log = logging.getLogger(__name__)
__all__ = ["DLQ_SUFFIX", "DeadLetterAlert", "IngestError", "IngestResult", "ensure_topics", "ingest"]


class DeadLetterAlert(RuntimeError):
    """The run committed, but too much of it went to the DLQ: a person must look (the reasons are named).
    ``result``: what the run did (it is committed, so it counts like any other run)."""

    def __init__(self, message: str, result: IngestResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def safe_run_id(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def admin(kafka: dict[str, Any]) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({**kafka, "socket.timeout.ms": 10_000})


def partitions_of(kafka: dict[str, Any], topic: str) -> int:
    from confluent_kafka import KafkaException

    meta = admin(kafka).list_topics(topic, timeout=15).topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaException(meta.error if meta else f"topic {topic} not found")
    return len(meta.partitions)


def ensure_topics(kafka: dict[str, Any], topics: dict[str, int]) -> None:
    """Create the topics that do not exist yet, with the given partition counts (idempotent)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    client = admin(kafka)
    existing = set(client.list_topics(timeout=15).topics)
    wanted = [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items() if t not in existing]
    if not wanted:
        return
    for topic, fut in client.create_topics(wanted, operation_timeout=30).items():
        try:
            fut.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
            log.info("topic %s already exists", topic)


def ensure_dlq(kafka: dict[str, Any], topic: str) -> int:
    """The topic's DLQ, created by ingestion with the source's partition count (poison keeps its partition)."""
    n = partitions_of(kafka, topic)
    ensure_topics(kafka, {topic + DLQ_SUFFIX: n})
    dlq_n = partitions_of(kafka, topic + DLQ_SUFFIX)
    if dlq_n < n:
        raise IngestError(f"{topic}{DLQ_SUFFIX} has {dlq_n} partitions but {topic} has {n}: add partitions to the DLQ")
    return n


# ------------------------------------------------------------------------------------------- producer


def producer(kafka: dict[str, Any]) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            **kafka,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
        }
    )


def produce_values(kafka: dict[str, Any], topic: str, items: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Write (key, value) pairs; returns the count acknowledged by the broker, or raises naming the errors."""
    prod = producer(kafka)
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    for key, value in items:
        while True:
            try:
                prod.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.5)
        n += 1
        if n % 5000 == 0:
            prod.poll(0)
    remaining = prod.flush(120)
    if remaining or errors:
        raise RuntimeError(f"{remaining} records not delivered to {topic}; first errors: {errors[:3]}")
    return n


def avro_serializer(registry: RegistryConfig, spec: SubjectSpec, version: int | None = None) -> Any:
    """confluent-kafka's AvroSerializer for a declared version of the subject (registered at `mlp up`: the
    serializer looks its id up and never registers anything itself)."""
    from confluent_kafka.schema_registry.avro import AvroSerializer

    from mlplatform.ingest import schemas

    return AvroSerializer(
        schemas.client(registry),
        spec.schema_str(version),
        conf={"auto.register.schemas": False, "use.latest.version": False, "normalize.schemas": False},
    )


def produce_records(
    kafka: dict[str, Any],
    registry: RegistryConfig,
    topic: str,
    records: Iterable[dict[str, Any]],
    key_field: str,
    version: int | None = None,
    schema_dir: Path | None = None,
) -> int:
    """Serialize records with the registry (Confluent wire format) and write them to ``topic``."""
    from confluent_kafka.serialization import MessageField, SerializationContext

    spec = subject_for_topic(topic, schema_dir)
    ser = avro_serializer(registry, spec, version)
    ctx = SerializationContext(topic, MessageField.VALUE)
    return produce_values(kafka, topic, ((str(r[key_field]).encode(), ser(r, ctx)) for r in records))


# --------------------------------------------------------------------------------------------- ingest


@dataclass
class IngestResult:
    """What one ingest run did for one topic. XCom carries this (references and counts, never data)."""

    topic: str
    run_id: str
    group: str
    uri: str  # the topic's landing zone
    records: int  # landed by this run (all its attempts)
    dead_lettered: int
    dead_by_kind: dict[str, int]
    lag: int  # records still behind the group when the run ended
    ranges: int  # manifest entries of this run
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # p -> start, next, stopped_by, lag
    this_attempt: dict[str, int] = field(default_factory=dict)  # landed / dead by this attempt alone
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_budget(budget: int, lag: dict[int, int]) -> dict[int, int]:
    """Share a record budget between partitions in proportion to their lag, exactly (largest remainder)."""
    total = sum(lag.values())
    if total <= budget:
        return dict(lag)
    exact = {p: budget * n / total for p, n in lag.items()}
    shares = {p: math.floor(x) for p, x in exact.items()}
    for p in sorted(exact, key=lambda q: exact[q] - shares[q], reverse=True)[: budget - sum(shares.values())]:
        shares[p] += 1
    return shares


class _Workers:
    """The worker process (see worker.py), started before the parent plans the run so that its imports
    overlap the parent's metadata calls; ``run`` hands it the jobs and collects the results."""

    def __init__(self) -> None:
        from mlplatform.ingest.worker import die_with

        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "mlplatform.ingest.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with(os.getpid()),  # noqa: PLW1509 - prctl only, no locks taken
        )

    def run(self, jobs: list[PartitionJob], workers: int) -> list[dict[str, Any]]:
        from mlplatform.ingest.worker import spec_of

        try:
            out, _ = self.proc.communicate(spec_of(jobs, workers).encode())
        finally:
            self.close()
        lines = out.decode().strip().splitlines()
        report = json.loads(lines[-1]) if lines else {}
        if self.proc.returncode != 0 or report.get("errors") or "results" not in report:
            why = "; ".join(report.get("errors") or [f"the worker process exited with {self.proc.returncode}"])
            raise IngestError(f"ingest failed for some partitions (what others committed stays committed): {why}")
        results: list[dict[str, Any]] = report["results"]
        return results

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ingest(
    topic: str,
    run_id: str,
    *,
    kafka: dict[str, Any],
    registry: RegistryConfig,
    group: str,
    landing_root: Path,
    max_records: int | None = None,
    max_seconds: float | None = None,
    parallelism: int = 0,
    dlq_max_share: float = 0.05,
    chunk_records: int = 500_000,
    row_group_records: int = 50_000,
    schema_dir: Path | None = None,
) -> IngestResult:
    """Land what is on ``topic`` beyond the group's position, exactly once, within the budget."""
    started = time.monotonic()
    spec = subject_for_topic(topic, schema_dir)
    pool = _Workers() if parallelism != 1 else None
    try:
        return _ingest(
            topic,
            run_id,
            spec,
            pool,
            kafka,
            registry,
            group,
            landing_root,
            max_records,
            max_seconds,
            parallelism,
            dlq_max_share,
            chunk_records,
            row_group_records,
            started,
        )
    finally:
        if pool is not None:
            pool.close()


def _ingest(
    topic: str,
    run_id: str,
    spec: SubjectSpec,
    pool: _Workers | None,
    kafka: dict[str, Any],
    registry: RegistryConfig,
    group: str,
    landing_root: Path,
    max_records: int | None,
    max_seconds: float | None,
    parallelism: int,
    dlq_max_share: float,
    chunk_records: int,
    row_group_records: int,
    started: float,
) -> IngestResult:
    from confluent_kafka import Consumer, TopicPartition

    from mlplatform.ingest.consume import consumer_conf

    n_parts = ensure_dlq(kafka, topic)
    landing = Landing(landing_root, topic)

    # Lag per partition, to share the record budget and skip idle partitions.
    probe_job = PartitionJob(topic, 0, group, kafka, {}, spec.name, "", str(landing_root), run_id)
    probe = Consumer(consumer_conf(probe_job))
    # The committed offsets as they stand, not waiting on pending ones: a read_committed fetch (KIP-447
    # require_stable) would block on the open transaction of a killed run until its timeout, and only the
    # partition workers fence that (init_transactions) before they fetch the offset they resume from.
    offsets = Consumer({**consumer_conf(probe_job), "isolation.level": "read_uncommitted"})
    try:
        tps = [TopicPartition(topic, p) for p in range(n_parts)]
        committed = {tp.partition: tp.offset for tp in kafka_call(offsets.committed, tps, timeout=30)}
        lag: dict[int, int] = {}
        visit: set[int] = set()
        for p in range(n_parts):
            low, high = kafka_call(probe.get_watermark_offsets, TopicPartition(topic, p), timeout=30)
            head, done = landing.head(p), committed[p] if committed[p] >= 0 else None
            land = max(x for x in (head, done, low) if x is not None)
            lag[p] = max(0, high - land)
            if lag[p] > 0 or (head is not None and (done is None or done < head)):
                visit.add(p)  # records to land, or a landed range whose commit was lost
    finally:
        offsets.close()
        probe.close()

    busy = sorted(visit)
    shares = split_budget(max_records, {p: lag[p] for p in busy}) if max_records else {}
    deadline = time.time() + max_seconds if max_seconds else None
    jobs = []
    for p in busy:
        share = shares.get(p) if max_records else None
        if share == 0 and lag[p] > 0:
            continue  # no budget left for it in this run: the next run takes it
        jobs.append(
            PartitionJob(
                topic=topic,
                partition=p,
                group=group,
                kafka=kafka,
                registry=asdict(registry),
                subject=spec.name,
                reader_schema=spec.schema_str(),
                landing_root=str(landing_root),
                run_id=run_id,
                max_records=share,
                deadline=deadline,
                chunk_records=chunk_records,
                row_group_records=row_group_records,
            )
        )
    # One process per partition (up to twice the cores): whole partitions cannot be split between
    # processes, so fewer processes than partitions leaves one of them with twice the work.
    workers = parallelism or min(len(jobs), 2 * (os.cpu_count() or 1))
    if pool is None or len(jobs) <= 1 or workers <= 1:
        results = [ingest_partition(j).to_dict() for j in jobs]
    else:
        results = pool.run(jobs, workers)

    # The run's totals come from the manifest, so a retry of the same run reports (and validates) what its
    # earlier attempts landed too.
    mine = [r for r in landing.ranges() if r.run_id == run_id and r.kind == "data"]
    dead_by_kind: Counter[str] = Counter()
    for r in mine:
        dead_by_kind.update(r.dead_by_kind)
    by_part = {int(res["partition"]): res for res in results}
    parts: dict[str, dict[str, Any]] = {}
    for p in range(n_parts):
        res = by_part.get(p)
        parts[str(p)] = (
            {k: res[k] for k in ("start", "next", "end_seen", "lag", "rows", "dead", "stopped_by")}
            if res
            else {"lag": 0, "stopped_by": "idle"}
        )
    result = IngestResult(
        topic=topic,
        run_id=run_id,
        group=group,
        uri=landing.dir.as_uri(),
        records=sum(r.rows for r in mine),
        dead_lettered=sum(r.dead for r in mine),
        dead_by_kind=dict(dead_by_kind),
        lag=sum(int(p.get("lag", 0)) for p in parts.values()),
        ranges=len(mine),
        partitions=parts,
        this_attempt={
            "records": sum(int(r["rows"]) for r in results),
            "dead_lettered": sum(int(r["dead"]) for r in results),
            "redelivered_dead": sum(int(r["redelivered_dead"]) for r in results),
        },
        seconds=round(time.monotonic() - started, 3),
        warnings=[w for r in results for w in r.get("warnings", [])],
    )
    log.info(
        "ingest %s run %s: landed %d, dead-lettered %d %s, lag left %d (%d ranges, %.1fs)",
        topic,
        run_id,
        result.records,
        result.dead_lettered,
        dict(dead_by_kind),
        result.lag,
        result.ranges,
        result.seconds,
    )
    check_dead_letters(result, dlq_max_share)
    return result


def check_dead_letters(result: IngestResult, max_share: float) -> None:
    """Raise DeadLetterAlert when the run's DLQ share passes ``max_share``, or nothing landed but poison."""
    total = result.records + result.dead_lettered
    if not result.dead_lettered:
        return
    share = result.dead_lettered / total
    if share > max_share or result.records == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(result.dead_by_kind.items(), key=lambda kv: -kv[1]))
        raise DeadLetterAlert(
            f"{result.topic}: {result.dead_lettered} of {total} records ({share:.1%}) of run {result.run_id} went to "
            f"{result.topic}{DLQ_SUFFIX} (threshold {max_share:.1%}): {reasons}. The offsets are committed and the "
            f"good records landed; read the DLQ's dlq.reason headers (`mlp dlq {result.topic}`) to see why.",
            result,
        )


def read_dead_letters(
    kafka: dict[str, Any], topic: str, limit: int = 100, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """The committed records of ``<topic>.dlq`` with their reasons (a read-only look: commits nothing)."""
    import uuid

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    dlq = topic + DLQ_SUFFIX
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"mlp-dlq-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    out: list[dict[str, Any]] = []
    try:
        meta = consumer.list_topics(dlq, timeout=10).topics.get(dlq)
        if meta is None or meta.error is not None:
            return []
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(dlq, p, 0) for p in parts])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(parts) and len(out) < limit and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=min(500, limit - len(out)), timeout=1.0):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                    continue
                headers = {k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])}
                out.append(
                    {
                        "source": headers.get("dlq.source", ""),
                        "kind": headers.get("dlq.reason.kind", ""),
                        "reason": headers.get("dlq.reason", ""),
                        "run_id": headers.get("dlq.run_id", ""),
                        "at": headers.get("dlq.at", ""),
                        "key": msg.key(),
                        "value": msg.value(),
                        "dlq_offset": f"{msg.partition()}/{msg.offset()}",
                    }
                )
    finally:
        consumer.close()
    return out
