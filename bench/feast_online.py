"""Online lookup benchmark: one entity × the feature service's features through Feast, in-process, against a
raw Redis read of the same keys, same Redis, same run.

This project: ``FeatureStore.get_online_features(features=<service>, entity_rows=[{customer_id}])`` on the
store ``mlplatform.features.store.get_store`` builds (SQL registry in PostgreSQL, Redis online store), with
the result turned into a dict as the model server does. The registry is warm, as in a running server.

Peer ("raw redis"): redis-py ``HMGET`` of the same hash key and fields Feast wrote (key and field names
computed with Feast's own helpers once, before timing), values left as bytes: the floor any Feast lookup
sits on.

Each side does the same sequence of lookups (random customers of a table materialized by this project's
``store.materialize``); latencies are per call (``perf_counter_ns``). Target: this project's p99 at most
2 ms. It starts PostgreSQL and Redis of a bench state dir (.mlp-bench) unless they run already, works in a
Feast project of its own, drops it at the end, and stops what it started.

    python bench/feast_online.py                 # 10k customers, 20k lookups per side
    python bench/feast_online.py --smoke         # 500 customers, 2k lookups (CI: the code paths)
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _report import publish

ROOT = Path(__file__).resolve().parents[1]
BENCH_ENV = {"MLP_HOME": str(ROOT / ".mlp-bench"), "MLP_POSTGRES_PORT": "35433", "MLP_REDIS_PORT": "36380"}
SERVICES = ["postgres", "redis"]
TARGET_P99_MS = 2.0


def table(customers: int, day: datetime) -> Any:
    import pandas as pd

    ids = [f"C{i:06d}" for i in range(customers)]
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_timestamp": [day + timedelta(minutes=i % 1440) for i in range(customers)],
            "tickets_7d": [i % 7 for i in range(customers)],
            "tickets_30d": [i % 30 for i in range(customers)],
            "high_priority_share_30d": [(i % 10) / 10 for i in range(customers)],
            "avg_body_len_30d": [float(100 + i % 50) for i in range(customers)],
            "is_enterprise": [i % 2 for i in range(customers)],
        }
    )


def percentiles(ns: list[int]) -> dict[str, float]:
    ms = sorted(x / 1e6 for x in ns)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 4)

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(ms[-1], 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "lookups": len(ms),
    }


def timed(fn: Any, ids: list[str]) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for c in ids:
        t0 = clock()
        fn(c)
        out.append(clock() - t0)
    return out


def run(customers: int, lookups: int, seed: int, serving: bool = True, ttl: int | None = None) -> dict[str, Any]:
    import redis
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from mlplatform.config.settings import get_settings
    from mlplatform.features import store

    base = get_settings()
    s = base.model_copy(update={"feast_project": f"bench_{uuid.uuid4().hex[:10]}"})
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp:
        features = Path(tmp) / "customer_daily"
        features.mkdir()
        os.environ["MLP_FEATURES_URI"] = str(features)
        table(customers, day).to_parquet(features / "part-0.parquet", index=False)
        try:
            store.apply(s)
            published = store.materialize(s, end=day + timedelta(days=2), days=10)
            fs = store.get_store(s, serving=serving, cache_ttl_seconds=ttl)  # as the model server makes it
            service = fs.get_feature_service(s.feature_service)
            names = [f.name for p in service.feature_view_projections for f in p.features]
            view = service.feature_view_projections[0].name

            def feast_lookup(c: str) -> dict[str, Any]:
                res: dict[str, Any] = fs.get_online_features(
                    features=service, entity_rows=[{"customer_id": c}]
                ).to_dict()
                return res

            client = redis.Redis(host=s.host, port=s.redis_port)
            fields = [_mmh3(f"{view}:{n}") for n in names] + [f"_ts:{view}".encode()]

            def key(c: str) -> bytes:
                ek = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=c)])
                return _redis_key(
                    fs.project, ek, entity_key_serialization_version=fs.config.entity_key_serialization_version
                )

            keys = {f"C{i:06d}": key(f"C{i:06d}") for i in range(customers)}

            def raw_lookup(c: str) -> list[Any]:
                return client.hmget(keys[c], fields)  # type: ignore[no-any-return]

            rng = random.Random(seed)
            ids = [f"C{rng.randrange(customers):06d}" for _ in range(lookups)]
            # both read the same values: the lookup is real, not a cache of something else
            sample = ids[0]
            got = feast_lookup(sample)
            raw = raw_lookup(sample)
            assert all(v is not None for v in raw), raw
            want = table(customers, day).set_index("customer_id").loc[sample]
            assert got["tickets_30d"][0] == int(want["tickets_30d"]), (got, want)
            for fn in (feast_lookup, raw_lookup):  # warm both paths (connections, registry cache)
                timed(fn, ids[: max(200, lookups // 20)])
            gc.collect()
            sides = {}
            for name, fn in (("peer_raw_redis_hmget", raw_lookup), ("this_project_feast", feast_lookup)):
                sides[name] = percentiles(timed(fn, ids))
        finally:
            store.drop_project(s)
    ours, peer = sides["this_project_feast"], sides["peer_raw_redis_hmget"]
    return {
        "customers": customers,
        "features": names,
        "materialized": published["written"],
        **sides,
        "p99_ratio_vs_raw": round(ours["p99_ms"] / peer["p99_ms"], 2),
        "p50_ratio_vs_raw": round(ours["p50_ms"] / peer["p50_ms"], 2),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": ours["p99_ms"] <= TARGET_P99_MS,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--sync-registry", action="store_true", help="refresh the registry cache in the lookup (Feast's default)"
    )
    ap.add_argument("--ttl", type=int, default=None, help="registry cache TTL in seconds (feature_store.yaml's)")
    ap.add_argument("--smoke", action="store_true", help="500 customers, 2k lookups: every code path (CI)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "feast_online.json"))
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.lookups = 500, 2_000

    os.environ.update({k: os.environ.get(k, v) for k, v in BENCH_ENV.items()})
    from mlplatform.config.settings import get_settings
    from mlplatform.stack import process
    from mlplatform.stack.manager import Stack

    stack = Stack(get_settings())
    running = {r.name for r in stack.status() if r.healthy}
    started = [n for n in SERVICES if n not in running]
    stack.up(only=SERVICES)
    try:
        row = run(args.customers, args.lookups, args.seed, not args.sync_registry, args.ttl)
    finally:
        for svc in reversed(stack.services):
            if svc.name in started:
                process.stop(stack.pid_file(svc))
    report = {
        "benchmark": "feast_online",
        "peer": "redis-py HMGET of the same key and fields, values left as bytes",
        "registry_cache": "sync" if args.sync_registry else "thread",
        "mode": "smoke" if args.smoke else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **row,
    }
    ours, peer = row["this_project_feast"], row["peer_raw_redis_hmget"]
    publish(
        report,
        args.out,
        f"feast_online [{report['mode']}]: 1 entity x {len(row['features'])} features, p50/p99 "
        f"{ours['p50_ms']}/{ours['p99_ms']} ms vs raw redis {peer['p50_ms']}/{peer['p99_ms']} ms "
        f"(p99 {row['p99_ratio_vs_raw']}x), target p99 <= {TARGET_P99_MS} ms: "
        f"{'met' if row['target_met'] else 'NOT met'}",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
