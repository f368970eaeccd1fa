"""One partition's ingest: read a bounded range, land it, dead-letter the poison, commit. Exactly once.

The unit of work is a *chunk* of one partition, at most ``chunk_records`` records or ``chunk_seconds``:

1. records are decoded into Arrow columns and streamed to a temporary Parquet file in row groups (memory
   is bounded by one row group, whatever the backlog); poison records are produced to the DLQ inside an
   open Kafka transaction, so nobody sees them yet;
2. the file is fsynced and linked to ``<start>-<end>.parquet``, then its manifest entry is created
   (exclusively: a racing writer loses here);
3. the transaction commits the DLQ records together with the consumer group's offset
   (``send_offsets_to_transaction``).

A crash before 2 leaves nothing (the transaction is aborted when the next run's producer with the same
``transactional.id`` starts, which also fences a zombie). A crash between 2 and 3 leaves the manifest
ahead of the committed offset: the next run re-reads that one range, lands nothing of it again, and
re-sends only its dead letters (see ``landing.plan_resume``). End of range is the log end offset seen at
start (for ``read_committed`` this is the last stable offset) or partition EOF, so transaction markers
and aborted records of upstream transactional producers never stall it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.ingest.avro import ColumnDecoder, DecodeError, RegistryLookup, SchemaLookup
from mlplatform.ingest.landing import Landing, Range, plan_resume
from mlplatform.ingest.schemas import RegistryConfig

log = logging.getLogger(__name__)
DLQ_SUFFIX = ".dlq"


class IngestError(RuntimeError):
    """The broker or a write failed mid-ingest; what was committed stays committed, the rest is retried."""


def _retriable(exc: BaseException) -> bool:
    """Broker states that pass by themselves within seconds (a restarting broker, a moving coordinator)."""
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return False
    err = exc.args[0]
    transient = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._WAIT_COORD,
    }
    return bool(err.retriable()) or err.code() in transient


def kafka_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A metadata call (committed offsets, watermarks) with tenacity retries on retriable broker errors,
    such as NOT_COORDINATOR while a restarted broker loads its group coordinator. Bounded: 30 s."""
    from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

    call = retry(
        retry=retry_if_exception(_retriable),
        stop=stop_after_delay(30),
        wait=wait_exponential(multiplier=0.2, max=3),
        reraise=True,
    )(fn)
    return call(*args, **kwargs)


class StuckClientError(IngestError):
    """A librdkafka call did not return within its own timeout (the client is unusable from then on)."""


# librdkafka ignores the timeout of a coordinator request when the coordinator goes away mid-call
# (confluentinc/librdkafka#5456, #5511, open): send_offsets_to_transaction can then block for ever after a
# broker restart. Every blocking transactional call runs under this grace on top of its own timeout; past
# it the worker gives up on the client and fails its partition, which is safe by construction (the same as
# a kill -9 there: the next attempt's producer fences and aborts the transaction, and resumes from the
# manifest). An Airflow retry then completes.
STUCK_GRACE_S = 15.0


def bounded(what: str, timeout: float, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a helper thread; StuckClientError when it has not returned after ``timeout`` plus
    the grace. The stuck thread is a daemon: it dies with the worker process, which exits right after."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=call, name=what, daemon=True)
    thread.start()
    thread.join(timeout + STUCK_GRACE_S)
    if thread.is_alive():
        raise StuckClientError(
            f"{what} did not return within {timeout + STUCK_GRACE_S:.0f} s although given {timeout:.0f} s "
            "(the broker or its coordinator went away mid-call); the partition's transaction is left open, "
            "to be aborted by the next attempt"
        )
    if "error" in box:
        raise box["error"]
    return box.get("value")


@dataclass(frozen=True)
class PartitionJob:
    """Everything one partition worker needs (JSON-serialisable: it crosses a process boundary)."""

    topic: str
    partition: int
    group: str
    kafka: dict[str, Any]  # librdkafka client settings: bootstrap.servers and security
    registry: dict[str, Any]  # RegistryConfig fields
    subject: str
    reader_schema: str
    landing_root: str
    run_id: str
    max_records: int | None = None  # None: no record budget
    deadline: float | None = None  # epoch seconds: stop (landing what was read) at this time
    chunk_records: int = 500_000
    chunk_seconds: float = 30.0
    row_group_records: int = 50_000
    batch_size: int = 5_000


@dataclass
class PartitionResult:
    topic: str
    partition: int
    start: int = 0  # position the run resumed at (land_from)
    next: int = 0  # position after the run
    end_seen: int = 0  # log end offset (LSO) at start
    lag: int = 0  # records left behind the position when the run ended
    rows: int = 0
    dead: int = 0
    dead_by_kind: dict[str, int] = field(default_factory=dict)
    redelivered_dead: int = 0  # dead letters re-sent for a range whose commit an earlier crash lost
    ranges: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str = "end"  # end | eof | max_records | deadline | idle
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def consumer_conf(job: PartitionJob) -> dict[str, Any]:
    return {
        **job.kafka,
        "group.id": job.group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "fetch.max.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 16 * 1024,
        "fetch.wait.max.ms": 100,  # the end of a partition is noticed within 100 ms
        "socket.timeout.ms": 30_000,
    }


def transactional_id(group: str, topic: str, partition: int) -> str:
    """One transactional producer per (group, topic, partition): a newer one fences any zombie of it."""
    return f"mlp-ingest.{group}.{topic}.{partition}"


def producer_conf(job: PartitionJob) -> dict[str, Any]:
    return {
        **job.kafka,
        "transactional.id": transactional_id(job.group, job.topic, job.partition),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 10,
        "compression.type": "lz4",
        "transaction.timeout.ms": 120_000,
        "message.timeout.ms": 60_000,
    }


class _Txn:
    """The partition's transactional producer: DLQ records and the offset commit, atomically."""

    def __init__(self, job: PartitionJob, consumer: Any) -> None:
        from confluent_kafka import Producer

        self.job = job
        self.consumer = consumer
        self.producer = Producer(producer_conf(job))
        # init_transactions fences (and aborts the open transaction of) any earlier producer of this
        # partition. It waits on the transaction coordinator, so it runs in the background while the worker
        # reads the partition's watermarks; the committed offset is fetched, and anything dead-lettered or
        # committed, only once it has finished (ready()).
        self._init_error: BaseException | None = None
        self._init = threading.Thread(target=self._init_transactions, name="init-transactions", daemon=True)
        self._init.start()
        self.open = False
        self.stuck = False  # a call hung past its timeout: the producer must not be touched again
        self.errors: list[str] = []
        self.dlq_topic = job.topic + DLQ_SUFFIX

    def _init_transactions(self) -> None:
        try:
            self.producer.init_transactions(30)
        except BaseException as exc:  # noqa: BLE001 - re-raised by ready() in the worker's thread
            self._init_error = exc

    def ready(self) -> None:
        self._init.join(30 + STUCK_GRACE_S)
        if self._init.is_alive():
            self.stuck = True
            raise StuckClientError("init_transactions did not return: the transaction coordinator is unreachable")
        if self._init_error is not None:
            raise IngestError(f"could not start the transactional producer: {self._init_error}") from self._init_error

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def dead_letter(self, msg: Any, err: DecodeError) -> None:
        if not self.open:
            self.ready()
            self.producer.begin_transaction()
            self.open = True
        headers = list(msg.headers() or [])
        headers += [
            ("dlq.reason", str(err).encode()),
            ("dlq.reason.kind", err.kind.encode()),
            ("dlq.source", f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()),
            ("dlq.run_id", self.job.run_id.encode()),
            ("dlq.at", datetime.now(UTC).isoformat().encode()),
        ]
        while True:
            try:
                self.producer.produce(
                    self.dlq_topic,
                    key=msg.key(),
                    value=msg.value(),
                    headers=headers,
                    partition=msg.partition(),
                    timestamp=msg.timestamp()[1] if msg.timestamp()[0] else 0,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self.producer.poll(0.2)
        self.producer.poll(0)

    def commit(self, next_offset: int) -> None:
        """Commit the open transaction's DLQ records together with the group's offset ``next_offset``."""
        from confluent_kafka import KafkaException, TopicPartition

        self.ready()
        try:
            if not self.open:
                self.producer.begin_transaction()
                self.open = True
            self.producer.flush(60)
            if self.errors:
                raise IngestError(f"dead-letter writes to {self.dlq_topic} failed: {self.errors[:3]}")
            bounded(
                "send_offsets_to_transaction",
                30,
                self.producer.send_offsets_to_transaction,
                [TopicPartition(self.job.topic, self.job.partition, next_offset)],
                self.consumer.consumer_group_metadata(),
                30,
            )
            bounded("commit_transaction", 60, self.producer.commit_transaction, 60)
            self.open = False
        except (KafkaException, IngestError) as exc:
            self.stuck = self.stuck or isinstance(exc, StuckClientError)
            self.abort()
            raise IngestError(
                f"{self.job.topic}/{self.job.partition}: the transaction committing offset {next_offset} failed "
                f"({exc}); landed data is kept, the next attempt resumes from the manifest"
            ) from exc

    def abort(self) -> None:
        self._init.join(30 + STUCK_GRACE_S)
        if self.open and not self.stuck and not self._init.is_alive():
            try:
                bounded("abort_transaction", 30, self.producer.abort_transaction, 30)
            except Exception:  # noqa: BLE001 - a fenced, failed or stuck producer cannot abort: the next
                # attempt's init_transactions (or the broker's transaction timeout) aborts it
                log.warning("could not abort the transaction of %s/%s", self.job.topic, self.job.partition)
        self.open = False


class _ChunkWriter:
    """Streams one chunk's rows to a temporary Parquet file, a row group at a time."""

    def __init__(self, landing: Landing, partition: int, schema: Any) -> None:
        self.landing = landing
        self.partition = partition
        self.schema = schema
        self.path: Path | None = None
        self.writer: Any = None
        self.rows = 0

    def write(self, table: Any) -> None:
        import pyarrow.parquet as pq

        if table.num_rows == 0:
            return
        if self.writer is None:
            self.path = self.landing.tmp_data_path(self.partition)
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd", write_statistics=True)
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows

    def close(self) -> Path | None:
        if self.writer is not None:
            self.writer.close()
        path, self.writer, self.path, self.rows = self.path, None, None, 0
        return path

    def discard(self) -> None:
        path = self.close()
        if path is not None:
            path.unlink(missing_ok=True)


def _lookup(job: PartitionJob) -> SchemaLookup:
    from mlplatform.ingest import schemas

    return RegistryLookup(schemas.client(RegistryConfig(**job.registry)))


def ingest_partition(job: PartitionJob, lookup: SchemaLookup | None = None) -> PartitionResult:
    """Land what is on one partition beyond the resume point, up to the end offset seen at start."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    landing = Landing(Path(job.landing_root), job.topic)
    landing.sweep_tmp(job.partition)
    result = PartitionResult(job.topic, job.partition)
    consumer = Consumer(consumer_conf(job))
    txn: _Txn | None = None
    writer: _ChunkWriter | None = None
    try:
        # Fence first: init_transactions aborts the open transaction of an earlier producer of this
        # partition (a killed run's). Until then the broker holds that run's pending offset commit, and a
        # read_committed offset fetch (KIP-447 require_stable) waits on it for up to the transaction timeout.
        txn = _Txn(job, consumer)
        tp = TopicPartition(job.topic, job.partition)
        low, high = kafka_call(consumer.get_watermark_offsets, tp, timeout=30)
        txn.ready()
        committed_tp = kafka_call(consumer.committed, [tp], timeout=30)[0]
        if committed_tp.error:
            raise KafkaException(committed_tp.error)
        committed = committed_tp.offset if committed_tp.offset >= 0 else None
        chain = landing.chain(job.partition)
        plan = plan_resume(chain, committed, low)
        for w in plan.warnings:
            log.warning("%s/%s: %s", job.topic, job.partition, w)
        result.warnings = list(plan.warnings)
        result.start = result.next = plan.land_from
        result.end_seen = high
        base: dict[str, Any] = {
            "topic": job.topic,
            "partition": job.partition,
            "run_id": job.run_id,
            "group": job.group,
        }

        if plan.gap is not None:
            a, b, why = plan.gap
            landing.commit_range(Range(**base, start=a, next=b, rows=0, dead=0, kind="gap", note=why), None)
        if plan.read_from >= high:
            result.lag = max(0, high - plan.land_from)
            return result

        decoder = ColumnDecoder(job.subject, job.reader_schema, lookup or _lookup(job))
        decoder.partition = job.partition
        probe = ColumnDecoder(job.subject, job.reader_schema, decoder.lookup)  # catch-up zone: classify only
        writer = _ChunkWriter(landing, job.partition, decoder.arrow_schema)
        consumer.assign([TopicPartition(job.topic, job.partition, plan.read_from)])

        budget = job.max_records if job.max_records is not None else float("inf")
        chunk_start, position = plan.land_from, plan.read_from
        chunk_dead: Counter[str] = Counter()
        chunk_first: int | None = None
        chunk_last: int | None = None
        chunk_began = time.monotonic()
        idle_polls = 0
        done = False

        def close_chunk() -> None:
            nonlocal chunk_start, chunk_dead, chunk_first, chunk_last, chunk_began
            assert txn is not None
            assert writer is not None
            if len(decoder):
                writer.write(decoder.flush())
            if position > chunk_start:
                rows = writer.rows
                rng = landing.commit_range(
                    Range(
                        **base,
                        start=chunk_start,
                        next=position,
                        rows=rows,
                        dead=sum(chunk_dead.values()),
                        dead_by_kind=dict(chunk_dead),
                        schema_ids=sorted(decoder.take_schema_ids()),
                        first_record=chunk_first,
                        last_record=chunk_last,
                    ),
                    writer.close(),
                )
                result.ranges.append(rng.to_dict())
                result.rows += rows
                chunk_start = position
            txn.commit(position)
            chunk_dead, chunk_first, chunk_last = Counter(), None, None
            chunk_began = time.monotonic()

        while not done:
            in_chunk = writer.rows + len(decoder)
            want = int(min(job.batch_size, job.chunk_records - in_chunk, budget))
            msgs = consumer.consume(num_messages=max(1, want), timeout=1.0)
            if position < plan.land_from:
                # landed by an earlier run whose commit was lost: only its dead letters are still due
                fresh = []
                for msg in msgs:
                    if msg.error() is not None or msg.offset() >= plan.land_from:
                        fresh.append(msg)
                    elif msg.offset() >= plan.dlq_from:
                        try:
                            probe.decode(msg.value(), msg.offset(), None)
                        except DecodeError as exc:
                            txn.dead_letter(msg, exc)
                            result.redelivered_dead += 1
                        probe.reset()
            else:
                fresh = msgs
            poison, eof_at = decoder.decode_batch(fresh)
            for msg, reason in poison:
                txn.dead_letter(msg, reason)
                chunk_dead[reason.kind] += 1
                result.dead += 1
            n_records = len(fresh) - (eof_at is not None)  # a partition's EOF event comes last
            if n_records > 0:
                if chunk_first is None:
                    chunk_first = fresh[0].offset()
                chunk_last = fresh[n_records - 1].offset()
                budget -= n_records
            if msgs:
                idle_polls = 0
                pos = consumer.position([TopicPartition(job.topic, job.partition)])[0].offset
                if pos >= 0:
                    position = max(position, pos)
            else:
                idle_polls += 1
            if eof_at is not None:
                position = max(position, eof_at)
            if len(decoder) >= job.row_group_records:
                writer.write(decoder.flush())

            if eof_at is not None:
                done, result.stopped_by = True, "eof"
            elif position >= high:
                done, result.stopped_by = True, "end"
            elif budget <= 0:
                done, result.stopped_by = True, "max_records"
            elif job.deadline is not None and time.time() >= job.deadline:
                done, result.stopped_by = True, "deadline"
            elif idle_polls >= 30:
                done, result.stopped_by = True, "idle"  # nothing from the broker for 30 s: land what we have
            if position < plan.land_from:
                continue  # still in the catch-up zone: nothing may be committed until it is re-read whole
            full = writer.rows + len(decoder) >= job.chunk_records
            if done or full or time.monotonic() - chunk_began >= job.chunk_seconds:
                if position > chunk_start or txn.open or committed is None or committed < position:
                    close_chunk()
                    committed = position
        if position < plan.land_from:
            txn.abort()  # stopped inside the catch-up zone: the next run re-reads it
        result.next = max(position, plan.land_from)
        result.dead_by_kind = dict(_sum_dead(result.ranges))
        _, high_now = kafka_call(consumer.get_watermark_offsets, TopicPartition(job.topic, job.partition), timeout=30)
        result.lag = max(0, high_now - result.next)
        return result
    except BaseException:
        if writer is not None:
            writer.discard()
        if txn is not None:
            txn.abort()
        raise
    finally:
        try:
            bounded("consumer.close", 30, consumer.close)
        except StuckClientError:
            log.warning("%s/%s: the consumer did not close; the worker exits anyway", job.topic, job.partition)


def _sum_dead(ranges: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for r in ranges:
        total.update(r.get("dead_by_kind") or {})
    return total
