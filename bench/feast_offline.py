"""Offline store benchmark: Feast's point-in-time training-set retrieval (``get_historical_features`` with the
escalation feature service) on each offline store this project could use, on the same tables, in one run.
It is the evaluation behind the local profile's default offline store (docs/architecture-notes.md, 25).

Stores (Feast's own, configured as a user would in ``feature_store.yaml``):
- ``file``: Feast's default file offline store (dask over Parquet);
- ``duckdb``: Feast's DuckDB offline store (ibis over the same Parquet files);
- ``spark``: Feast's Spark offline store on ``local[2]`` (a ``SparkSource`` over the same files), the
  cluster profile's candidate.

Peer ("duckdb_asof"): one hand-written DuckDB ``ASOF LEFT JOIN`` with the view's TTL, the floor any
point-in-time join sits on. It is also the oracle: every store's result, joined back onto every entity row
by ``ticket_id`` as ``mlplatform.features.store.training_set`` does, must equal it value for value before
anything is timed.

Data: the shape of the project's ``customer_daily`` table (rows at the change points of each customer),
entity rows that fall between feature rows, before a customer's first row and past the 45-day TTL.
Each store is timed warm (its first retrieval, which starts a Spark session or loads dask, is reported
separately as ``first_s``): best of ``--repeat`` runs.

    python bench/feast_offline.py              # 20k customers (about 1M feature rows), 200k entity rows
    python bench/feast_offline.py --smoke      # 1k customers, 5k entity rows (CI: the code paths)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _report import publish

ROOT = Path(__file__).resolve().parents[1]
STORES = ("file", "duckdb", "spark")
FEATURES = ["tickets_7d", "tickets_30d", "high_priority_share_30d", "avg_body_len_30d", "is_enterprise"]
TTL = timedelta(days=45)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def feature_table(customers: int, days: int, seed: int) -> Any:
    """Rows per customer on random days (about 1 in 2), stamped at the day's end as the Spark job does."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    keep = rng.random((customers, days)) < 0.5
    cust, day = np.nonzero(keep)
    n = len(cust)
    stamps = (EPOCH.timestamp() + (day + 1) * 86400 - 1).astype("int64") * 1_000_000
    return pa.table(
        {
            "customer_id": pa.array([f"C{c:06d}" for c in cust]),
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "tickets_7d": pa.array(rng.integers(0, 10, n)),
            "tickets_30d": pa.array(rng.integers(0, 40, n)),
            "high_priority_share_30d": pa.array(rng.random(n)),
            "avg_body_len_30d": pa.array(rng.random(n) * 500),
            "is_enterprise": pa.array((cust % 3 == 0).astype("int64")),
        }
    )


def entity_rows(customers: int, days: int, n: int, seed: int) -> Any:
    """Labelled tickets: timestamps from a week before the table to 60 days after its last day (past the TTL)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + 1)
    span = (days + 67) * 86400
    secs = EPOCH.timestamp() - 7 * 86400 + rng.random(n) * span
    return pd.DataFrame(
        {
            "ticket_id": [f"T{i:07d}" for i in range(n)],
            "customer_id": [f"C{c:06d}" for c in rng.integers(0, customers, n)],
            "event_timestamp": pd.to_datetime(secs, unit="s", utc=True).floor("us"),
        }
    )


def oracle(features: str, entity: Any) -> tuple[Any, float]:
    """The hand-written ASOF join with the TTL, in DuckDB (the peer)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2; SET TimeZone = 'UTC'")
    con.register("entity", entity)
    started = time.perf_counter()
    cols = ", ".join(
        f"CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 45 DAY THEN f.{c} END AS {c}" for c in FEATURES
    )
    out = con.execute(
        f"""
        SELECT e.ticket_id, {cols}
        FROM entity e ASOF LEFT JOIN read_parquet('{features}') f
          ON e.customer_id = f.customer_id AND e.event_timestamp >= f.event_timestamp
        """
    ).df()
    return out, time.perf_counter() - started


def make_store(kind: str, work: Path, features: str) -> tuple[Any, Any]:
    """A FeatureStore of its own (file registry, SQLite online store unused) whose offline store is ``kind``,
    with the project's view (same name, TTL and schema) over the Parquet file, and the service."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
    from feast.data_format import ParquetFormat
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    d = work / kind
    d.mkdir()
    offline: dict[str, Any] = {"type": kind}
    if kind == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        offline["spark_conf"] = {
            "spark.master": "local[2]",
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.driver.memory": "4g",
        }
        source: Any = SparkSource(
            name="customer_daily_source", path=features, file_format="parquet", timestamp_field="event_timestamp"
        )
    else:
        source = FileSource(
            name="customer_daily_source", path=features, file_format=ParquetFormat(), timestamp_field="event_timestamp"
        )
    config = RepoConfig(
        project="bench_offline",
        provider="local",
        registry=str(d / "registry.db"),
        online_store={"type": "sqlite", "path": str(d / "online.db")},
        offline_store=offline,
        entity_key_serialization_version=3,
    )
    store = FeatureStore(repo_path=str(d), config=config)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=TTL,
        schema=[Field(name=c, dtype=Float64 if "share" in c or "avg" in c else Int64) for c in FEATURES],
        source=source,
        online=True,
    )
    service = FeatureService(name="escalation_features", features=[view])
    store.apply([customer, source, view, service])
    return store, service


def retrieve(store: Any, service: Any, entity: Any) -> Any:
    """What ``training_set`` does: Feast's join, then joined back onto every entity row by ticket_id."""
    joined = store.get_historical_features(entity_df=entity, features=service).to_df()
    return entity[["ticket_id"]].merge(joined[["ticket_id", *FEATURES]], on="ticket_id", how="left")


def same(result: Any, expected: Any) -> list[str]:
    """The columns in which the two frames differ (by ticket_id, nulls equal, floats to 1e-9)."""
    import numpy as np

    a = result.sort_values("ticket_id").reset_index(drop=True)
    b = expected.sort_values("ticket_id").reset_index(drop=True)
    if len(a) != len(b) or not (a.ticket_id.to_numpy() == b.ticket_id.to_numpy()).all():
        return ["ticket_id"]
    bad = []
    for c in FEATURES:
        x, y = a[c].astype("float64").to_numpy(), b[c].astype("float64").to_numpy()
        if not np.allclose(x, y, rtol=0, atol=1e-9, equal_nan=True):
            bad.append(c)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=100)
    ap.add_argument("--entity-rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stores", default=",".join(STORES), help="comma-separated subset of " + ",".join(STORES))
    ap.add_argument("--smoke", action="store_true", help="1k customers, 5k entity rows, one timed run (CI)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "feast_offline.json"))
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.days, args.entity_rows, args.repeat = 1_000, 40, 5_000, 1
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="mlp-bench-offline-") as tmp:
        work = Path(tmp)
        table = feature_table(args.customers, args.days, seed=11)
        features = str(work / "customer_daily.parquet")
        pq.write_table(table, features)
        entity = entity_rows(args.customers, args.days, args.entity_rows, seed=11)
        expected, peer_first = oracle(features, entity)
        peer_s = min([peer_first] + [oracle(features, entity)[1] for _ in range(args.repeat)])
        report: dict[str, Any] = {
            "machine": f"{platform.node()} ({os.cpu_count()} cpus)",
            "feature_rows": table.num_rows,
            "entity_rows": len(entity),
            "rows_with_features": int(expected[FEATURES[0]].notna().sum()),
            "peer": {"name": "duckdb_asof", "seconds": round(peer_s, 4)},
            "stores": {},
        }
        for kind in [k for k in args.stores.split(",") if k]:
            store, service = make_store(kind, work, features)
            started = time.perf_counter()
            result = retrieve(store, service, entity)
            first = time.perf_counter() - started
            wrong = same(result, expected)
            if wrong:
                raise SystemExit(f"{kind}: the training set differs from the point-in-time oracle in {wrong}")
            runs = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                retrieve(store, service, entity)
                runs.append(time.perf_counter() - started)
            best = min(runs)
            report["stores"][kind] = {
                "first_s": round(first, 3),
                "seconds": round(best, 4),
                "entity_rows_per_s": round(len(entity) / best),
                "ratio_vs_peer": round(best / peer_s, 2),
                "identical_to_oracle": True,
            }
        stores = report["stores"]
        fastest = min(stores, key=lambda k: stores[k]["seconds"])
        report["fastest"] = fastest
        summary = (
            f"feast_offline [{'smoke' if args.smoke else 'full'}]: {report['feature_rows']:,} feature rows x "
            f"{len(entity):,} entity rows: "
            + ", ".join(f"{k} {v['seconds']:.2f}s ({v['ratio_vs_peer']}x peer)" for k, v in stores.items())
        )
        summary += f"; peer duckdb_asof {peer_s:.3f}s; fastest {fastest}"
        publish(report, args.out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
