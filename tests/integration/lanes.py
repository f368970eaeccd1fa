"""A per-test ingest lane on the real stack: a unique topic whose data contract is registered in the real
schema registry, a unique consumer group, and the checks that prove exactly-once: every record offset of
the topic is in the landing or in the DLQ, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplatform.config.settings import REPO_ROOT, Settings
from mlplatform.ingest import schemas
from mlplatform.ingest.kafka import ensure_topics, produce_values, read_dead_letters
from mlplatform.ingest.landing import Landing
from mlplatform.pipeline.stages import ingest_topic


@dataclass
class Lane:
    settings: Settings
    topic: str
    group: str
    schema_dir: Path
    partitions: int = 3
    ids: dict[str, list[int]] = field(default_factory=dict)

    @property
    def kafka(self) -> dict[str, Any]:
        return dict(self.settings.kafka_client())

    @property
    def registry(self) -> schemas.RegistryConfig:
        return schemas.RegistryConfig(self.settings.schema_registry_url)

    @property
    def landing(self) -> Landing:
        return Landing(self.settings.landing_root, self.topic)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MLP_SCHEMA_DIR": str(self.schema_dir), "PYTHONUNBUFFERED": "1"}

    # ------------------------------------------------------------------------------------ writing

    def serializer(self, version: int | None = None) -> Any:
        from mlplatform.ingest.kafka import avro_serializer

        return avro_serializer(self.registry, schemas.subject_for_topic(self.topic, self.schema_dir), version)

    def tickets(self, n: int, seed: int, version: int = 1) -> list[tuple[bytes, bytes]]:
        """n synthetic tickets serialized by confluent-kafka's AvroSerializer (registry-assigned ids)."""
        from confluent_kafka.serialization import MessageField, SerializationContext

        from mlplatform.ingest.synth import SynthConfig, generate

        ser = self.serializer(version)
        ctx = SerializationContext(self.topic, MessageField.VALUE)
        tickets, _ = generate(SynthConfig(events=n, seed=seed, schema_version=version))
        for t in tickets:  # unique across calls: ticket ids carry the seed, offsets tell them apart anyway
            t["ticket_id"] = f"{t['ticket_id']}-{uuid.uuid4().hex[:6]}"
        return [(t["customer_id"].encode(), ser(t, ctx)) for t in tickets]

    def foreign(self, good: bytes) -> bytes:
        """A payload framed with the id of another subject's schema (support.outcomes-value)."""
        other = schemas.client(self.registry).get_latest_version("support.outcomes-value").schema_id
        return b"\x00" + int(other).to_bytes(4, "big") + good[5:]

    def produce(self, values: list[tuple[bytes | None, bytes | None]]) -> int:
        return produce_values(self.kafka, self.topic, values)

    # ------------------------------------------------------------------------------------ ingesting

    def ingest(self, run_id: str = "run-1", **kw: Any) -> dict[str, Any]:
        """In-process: exactly the library call the DAG task makes."""
        kw.setdefault("chunk_records", 2_000)
        kw.setdefault("row_group_records", 500)
        return ingest_topic(
            self.topic,
            run_id,
            s=self.settings,
            group=self.group,
            landing=self.settings.landing_root,
            schema_dir=self.schema_dir,
            **kw,
        )

    def cli(self, *args: str) -> list[str]:
        """The argv of `mlp ingest` for this lane (the subprocess a person or a kill -9 test runs)."""
        return [sys.executable, "-m", "mlplatform.cli", "ingest", self.topic, "--group", self.group, *args]

    def run_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cli(*args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT
        )

    # ------------------------------------------------------------------------------------ checking

    def topic_offsets(self) -> set[tuple[int, int]]:
        """Every record offset on the topic (committed records only: markers and aborted records excluded)."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        c = Consumer(
            {
                **self.kafka,
                "group.id": f"check-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "enable.auto.commit": False,
            }
        )
        c.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
        seen: set[tuple[int, int]] = set()
        done: set[int] = set()
        deadline = time.monotonic() + 120
        while len(done) < self.partitions and time.monotonic() < deadline:
            for m in c.consume(5000, 1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                    continue
                seen.add((m.partition(), m.offset()))
        c.close()
        assert len(done) == self.partitions, "could not read the topic to its end"
        return seen

    def landed_offsets(self) -> list[tuple[int, int]]:
        """(partition, offset) of every row in the landing files the manifest lists (duplicates kept)."""
        import pyarrow.dataset as ds

        files = [str(self.landing.dir / r.file) for r in self.landing.ranges() if r.file]
        if not files:
            return []
        t = ds.dataset(files).to_table(columns=["_partition", "_offset"])
        return list(zip(t.column("_partition").to_pylist(), t.column("_offset").to_pylist(), strict=True))

    def dead_letters(self) -> list[dict[str, Any]]:
        return read_dead_letters(self.kafka, self.topic, limit=1_000_000, timeout_s=60)

    def assert_exactly_once(self) -> dict[str, int]:
        """The landing plus the DLQ hold every record offset of the topic, each exactly once."""
        on_topic = self.topic_offsets()
        landed = self.landed_offsets()
        dead = []
        for d in self.dead_letters():
            topic, p, o = d["source"].rsplit("/", 2)
            assert topic == self.topic
            dead.append((int(p), int(o)))
        dup_landed = [k for k, n in Counter(landed).items() if n > 1]
        dup_dead = [k for k, n in Counter(dead).items() if n > 1]
        assert not dup_landed, f"{len(dup_landed)} offsets landed twice, e.g. {dup_landed[:5]}"
        assert not dup_dead, f"{len(dup_dead)} offsets dead-lettered twice, e.g. {dup_dead[:5]}"
        both = set(landed) & set(dead)
        assert not both, f"{len(both)} offsets both landed and dead-lettered, e.g. {sorted(both)[:5]}"
        missing = on_topic - set(landed) - set(dead)
        assert not missing, f"{len(missing)} offsets lost, e.g. {sorted(missing)[:5]}"
        extra = (set(landed) | set(dead)) - on_topic
        assert not extra, f"{len(extra)} offsets that are not records of the topic, e.g. {sorted(extra)[:5]}"
        self.assert_chain_tiles()
        return {"on_topic": len(on_topic), "landed": len(landed), "dead_lettered": len(dead)}

    def assert_chain_tiles(self) -> None:
        """Each partition's manifest entries follow each other without gap or overlap."""
        for p in self.landing.partitions():
            chain = self.landing.chain(p)
            for a, b in zip(chain, chain[1:], strict=False):
                assert a.next == b.start, f"partition {p}: entry {a.start}..{a.next} then {b.start}"


def make_lane(settings: Settings, tmp_path: Path, partitions: int = 3, base: str = "support.tickets") -> Lane:
    """A unique topic with the reference ticket contract (v1 and v2) registered under its own subject."""
    topic = f"it.{uuid.uuid4().hex[:10]}.tickets"
    spec = schemas.load_subjects(schemas.SCHEMA_DIR)[f"{base}-value"]
    d = tmp_path / "contracts"
    d.mkdir(parents=True, exist_ok=True)
    for v in spec.versions:
        (d / v.name).write_text(v.read_text())
    (d / "subjects.yaml").write_text(
        json.dumps({f"{topic}-value": {"compatibility": "BACKWARD", "versions": [v.name for v in spec.versions]}})
    )
    lane = Lane(settings, topic, f"it-{uuid.uuid4().hex[:8]}", d, partitions)
    ensure_topics(lane.kafka, {topic: partitions})
    lane.ids = schemas.register_all(lane.registry, d)
    return lane
