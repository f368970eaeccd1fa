"""Ingestion benchmark: this project's exactly-once ingest against a plain raw consumer, same topic, same
range, same machine, same run.

Peer ("raw"): what a competent engineer writes without this project: one confluent-kafka consumer,
``consume()`` batches, fastavro ``schemaless_reader`` with the writer schema parsed once, rows collected
as dicts and written to Parquet with pyarrow a row group at a time (``Table.from_pylist``), offsets
committed at the end. No DLQ, no manifest, no transactions, no schema resolution.

This project: ``mlp ingest`` (the DAG task's code) with its default settings: partition worker processes,
Arrow columns built directly, manifest, DLQ and offsets committed in Kafka transactions.

Each side runs as its own process tree on its own copy of the topic's range (own consumer group, own
landing dir); the benchmark measures wall time, CPU seconds (user+sys of the whole tree) and peak RSS
(sum over the tree, sampled every 20 ms), checks that both landed the same records, and prints the
ratios. Memory is peak PSS summed over the process tree (pages shared by forked workers count once).
It starts PostgreSQL, Kafka and the schema registry of a bench state dir (.mlp-bench) unless
they run already, and stops what it started.

    python bench/ingest.py                      # 1M and 10M events (about 15 min on 2 cores)
    python bench/ingest.py --events 200000      # one size
    python bench/ingest.py --smoke              # 20k events, every code path, for CI
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_ENV = {
    "MLP_HOME": str(ROOT / ".mlp-bench"),
    "MLP_KAFKA_PORT": "39092",
    "MLP_KAFKA_CONTROLLER_PORT": "39093",
    "MLP_POSTGRES_PORT": "35433",
    "MLP_SCHEMA_REGISTRY_PORT": "38081",
}
SERVICES = ["postgres", "kafka", "schema-registry"]


# ------------------------------------------------------------------------------------------ the peer


def run_peer(topic: str, bootstrap: str, registry_url: str, out_dir: str, group: str) -> dict[str, Any]:
    """The plain raw consumer (runs in its own process: ``bench/ingest.py --peer ...``)."""
    import fastavro
    import pyarrow as pa
    import pyarrow.parquet as pq
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient

    sr = SchemaRegistryClient({"url": registry_url})
    schemas: dict[int, Any] = {}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            # the same fetch sizing as this project's consumer: the comparison is about the code
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "fetch.max.bytes": 16 * 1024 * 1024,
            "fetch.wait.max.ms": 100,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = sorted(meta.partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    writer = None
    rows: list[dict[str, Any]] = []
    done: set[int] = set()
    n = 0

    def flush() -> None:
        nonlocal writer, rows
        if not rows:
            return
        table = pa.Table.from_pylist(rows)
        if writer is None:
            writer = pq.ParquetWriter(f"{out_dir}/part-0.parquet", table.schema)
        writer.write_table(table)
        rows = []

    while len(done) < len(parts):
        for msg in consumer.consume(10000, timeout=1.0):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                continue
            value = msg.value()
            sid = int.from_bytes(value[1:5], "big")
            if sid not in schemas:
                schemas[sid] = fastavro.parse_schema(json.loads(sr.get_schema(sid).schema_str))
            rec = fastavro.schemaless_reader(io.BytesIO(value[5:]), schemas[sid], None)
            rec["_partition"], rec["_offset"] = msg.partition(), msg.offset()
            rows.append(rec)
            n += 1
            if len(rows) >= 50_000:
                flush()
    flush()
    if writer is not None:
        writer.close()
    consumer.commit(asynchronous=False)
    consumer.close()
    return {"records": n}


# ----------------------------------------------------------------------------------------- measuring


def measure(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a command; wall time, CPU of the whole tree (rusage of children), and peak memory of the tree as
    the sum of PSS (proportional set size: a page shared by forked workers counts once, split between
    them; for a single process PSS is its RSS less what it shares with others)."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # noqa: S603
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_full_info().pss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_pss_mb": peak / 2**20, "stdout": out.decode()}


def landed_digest(files: list[Path]) -> tuple[int, str]:
    """Row count and a digest of the sorted (partition, offset, ticket_id) triples: same records, same digest."""
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    t = ds.dataset([str(f) for f in files]).to_table(columns=["_partition", "_offset", "ticket_id"])
    t = t.sort_by([("_partition", "ascending"), ("_offset", "ascending")])
    h = hashlib.sha256()
    for col in ("_partition", "_offset", "ticket_id"):
        arr = pc.cast(t[col], pa.string()) if col != "ticket_id" else t[col]
        h.update("\x1f".join(arr.to_pylist()).encode())
    return t.num_rows, h.hexdigest()[:16]


# -------------------------------------------------------------------------------------------- setup


def produce(topic: str, events: int, kafka: dict[str, Any], registry: Any) -> None:
    """``events`` v1 tickets (synthetic, unique ids), framed with the registry's id, on 3 partitions."""
    import fastavro
    from confluent_kafka.schema_registry import Schema

    from mlplatform.ingest import schemas
    from mlplatform.ingest.avro import frame
    from mlplatform.ingest.kafka import ensure_topics, produce_values
    from mlplatform.ingest.synth import SynthConfig, generate

    spec = schemas.load_subjects(schemas.SCHEMA_DIR)["support.tickets-value"]
    sr = schemas.client(registry)
    sr.register_schema(f"{topic}-value", Schema(spec.schema_str(1), "AVRO"))
    # the bench topic's subject holds the same v1 schema: same id as support.tickets-value
    schema_id = sr.lookup_schema(f"{topic}-value", Schema(spec.schema_str(1), "AVRO")).schema_id
    parsed = fastavro.parse_schema(json.loads(spec.schema_str(1)))
    base, _ = generate(SynthConfig(events=min(events, 100_000), seed=7))
    ensure_topics(kafka, {topic: 3})

    def values() -> Any:
        buf = io.BytesIO()
        for i in range(events):
            rec = dict(base[i % len(base)])
            rec["ticket_id"] = f"B{i:010d}"
            buf.seek(0)
            buf.truncate()
            fastavro.schemaless_writer(buf, parsed, rec)
            yield rec["customer_id"].encode(), frame(schema_id, buf.getvalue())

    produce_values(kafka, topic, values())


def bench_size(events: int, kafka: dict[str, Any], registry: Any, env: dict[str, str], work: Path) -> dict[str, Any]:
    from mlplatform.ingest.landing import Landing
    from mlplatform.ingest.schemas import SCHEMA_DIR, load_subjects

    topic = f"bench.ingest.{events}.{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    produce(topic, events, kafka, registry)
    produce_s = time.perf_counter() - t0
    # This project: `mlp ingest` needs the topic's data contract: a schemas dir naming the bench subject.
    contracts = work / f"schemas-{events}"
    contracts.mkdir(parents=True, exist_ok=True)
    spec = load_subjects(SCHEMA_DIR)["support.tickets-value"]
    for v in spec.versions:
        (contracts / v.name).write_text(v.read_text())
    (contracts / "subjects.yaml").write_text(
        json.dumps({f"{topic}-value": {"compatibility": "BACKWARD", "versions": [v.name for v in spec.versions]}})
    )
    ours_env = {**env, "MLP_SCHEMA_DIR": str(contracts), "MLP_HOME": str(work / f"ours-{events}")}
    ours = measure(
        [sys.executable, "-m", "mlplatform.cli", "ingest", topic, "--group", f"bench-ours-{uuid.uuid4().hex[:6]}"],
        ours_env,
    )
    result = json.loads(ours["stdout"].strip().splitlines()[-1])
    peer_dir = work / f"peer-{events}"
    peer = measure(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--peer",
            topic,
            kafka["bootstrap.servers"],
            registry.url,
            str(peer_dir),
        ],
        env,
    )
    landing = Landing(work / f"ours-{events}" / "data" / "landing", topic)
    ours_rows, ours_digest = landed_digest([landing.dir / r.file for r in landing.ranges() if r.file])
    peer_rows, peer_digest = landed_digest(sorted(peer_dir.glob("*.parquet")))
    if not (ours_rows == peer_rows == events == result["records"] and ours_digest == peer_digest):
        raise AssertionError(f"outputs differ: ours {ours_rows} {ours_digest}, peer {peer_rows} {peer_digest}")
    row: dict[str, Any] = {"events": events, "produce_s": round(produce_s, 1), "identical_output": True}
    for name, m in (("this_project", ours), ("peer_raw_consumer", peer)):
        row[name] = {
            "events_per_s": round(events / m["wall_s"]),
            "wall_s": round(m["wall_s"], 2),
            "cpu_s_per_million": round(m["cpu_s"] / events * 1e6, 2),
            "peak_pss_mb": round(m["peak_pss_mb"], 1),
        }
    row["speedup"] = round(row["this_project"]["events_per_s"] / row["peer_raw_consumer"]["events_per_s"], 2)
    row["ranges"] = result["ranges"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", default="1000000,10000000", help="comma-separated sizes")
    ap.add_argument("--smoke", action="store_true", help="20k events: checks every code path (CI)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    ap.add_argument("--peer", nargs=4, metavar=("TOPIC", "BOOTSTRAP", "REGISTRY", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        topic, bootstrap, registry_url, out_dir = args.peer
        print(json.dumps(run_peer(topic, bootstrap, registry_url, out_dir, f"bench-peer-{uuid.uuid4().hex[:6]}")))
        return 0
    sizes = [20_000] if args.smoke else [int(x) for x in args.events.split(",")]

    os.environ.update({k: os.environ.get(k, v) for k, v in BENCH_ENV.items()})
    from mlplatform.config.settings import get_settings
    from mlplatform.ingest.schemas import RegistryConfig
    from mlplatform.stack.manager import Stack

    s = get_settings()
    stack = Stack(s)
    running = {r.name for r in stack.status() if r.healthy}
    started = [n for n in SERVICES if n not in running]
    stack.up(only=SERVICES)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kafka = {"bootstrap.servers": s.kafka_bootstrap}
    registry = RegistryConfig(s.schema_registry_url)
    work = s.home / "runs" / time.strftime("%Y%m%dT%H%M%S")
    rows = []
    try:
        for n in sizes:
            rows.append(bench_size(n, kafka, registry, env, work))
            ours, peer = rows[-1]["this_project"], rows[-1]["peer_raw_consumer"]
            print(
                f"  {n:>10,} events: this project {ours['events_per_s']:>9,}/s ({ours['peak_pss_mb']:.0f} MB), "
                f"raw consumer {peer['events_per_s']:>9,}/s ({peer['peak_pss_mb']:.0f} MB): {rows[-1]['speedup']}x",
                flush=True,
            )
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        if started:
            for svc in reversed(stack.services):
                if svc.name in started:
                    from mlplatform.stack import process

                    process.stop(stack.pid_file(svc))
    report: dict[str, Any] = {
        "benchmark": "ingest",
        "peer": "plain confluent-kafka consumer + fastavro schemaless_reader (cached schema) + pyarrow from_pylist",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "sizes": rows,
    }
    if len(rows) >= 2:
        ours = [r["this_project"]["peak_pss_mb"] for r in (rows[0], rows[-1])]
        peer = [r["peer_raw_consumer"]["peak_pss_mb"] for r in (rows[0], rows[-1])]
        report["memory_growth_this_project"] = round(ours[1] / ours[0], 3)
        report["memory_growth_peer"] = round(peer[1] / peer[0], 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    last = rows[-1]
    summary = (
        f"ingest [{'smoke' if args.smoke else 'full'}]: {last['events']:,} events, this project "
        f"{last['this_project']['events_per_s']:,}/s vs raw consumer {last['peer_raw_consumer']['events_per_s']:,}/s "
        f"= {last['speedup']}x"
    )
    if "memory_growth_this_project" in report:
        summary += f"; peak memory {sizes[-1]:,} vs {sizes[0]:,} events: {report['memory_growth_this_project']}x"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
