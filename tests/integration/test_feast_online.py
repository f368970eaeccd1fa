"""Feast's online store on the real services (PostgreSQL registry, Redis): each test publishes its own table in a
Feast project of its own, so nothing it writes meets another test's keys or the pipeline's."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import psutil
import pytest
from feast.errors import FeatureServiceNotFoundException

from mlplatform.features import store
from mlplatform.stack import process

DAY = datetime(2026, 5, 1, tzinfo=UTC)
END = DAY + timedelta(days=3)


def _table(customers: int, bump: int = 0) -> pd.DataFrame:
    ids = [f"C{i:06d}" for i in range(customers)]
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_timestamp": [DAY + timedelta(hours=i % 24) for i in range(customers)],
            "tickets_7d": [i % 7 + bump for i in range(customers)],
            "tickets_30d": [i % 30 + bump for i in range(customers)],
            "high_priority_share_30d": [(i % 10) / 10 for i in range(customers)],
            "avg_body_len_30d": [float(100 + i % 50) for i in range(customers)],
            "is_enterprise": [i % 2 for i in range(customers)],
        }
    )


@pytest.fixture
def project(settings, stack, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A Feast project of this test's own over the stack's registry and Redis, with its offline table."""
    s = settings.model_copy(update={"feast_project": f"t_{uuid.uuid4().hex[:12]}"})
    features = tmp_path / "customer_daily"
    features.mkdir()
    monkeypatch.setenv("MLP_FEATURES_URI", str(features))

    def publish(df: pd.DataFrame) -> dict:
        """Swap in a whole new offline table (as the Spark job does), then materialize."""
        for old in features.iterdir():
            old.unlink()
        df.to_parquet(features / "part-0.parquet", index=False)
        return store.materialize(s, end=END, days=10)

    store.apply(s)
    yield s, publish
    store.drop_project(s)  # the project's online keys and registry objects, no other project's


def _online(s, ids: list[str]) -> list:  # type: ignore[no-untyped-def]
    return store.online_features(ids, s)["tickets_30d"]


def test_a_correction_with_the_same_event_time_replaces_the_online_value(project):
    s, publish = project
    table = _table(200)
    assert publish(table)["written"] == {"customer_stats": 200}
    assert publish(table)["written"] == {"customer_stats": 0}
    corrected = table.copy()
    corrected.loc[corrected.customer_id == "C000007", "tickets_30d"] = 99  # a late event, same day, same stamp
    assert publish(corrected)["written"] == {"customer_stats": 1}
    assert _online(s, ["C000007", "C000008"]) == [99, 8]


def test_lookups_never_miss_while_a_materialization_rewrites_every_row(project):
    s, publish = project
    publish(_table(3000))
    ids = [f"C{i:06d}" for i in range(0, 3000, 150)]
    misses: list[list] = []
    lookups = 0
    writer = threading.Thread(target=publish, args=(_table(3000, bump=1),))
    writer.start()
    while writer.is_alive() or lookups == 0:
        got = _online(s, ids)
        lookups += 1
        if None in got:
            misses.append(got)
    writer.join()
    assert not misses, f"{len(misses)} of {lookups} lookups missed during the materialization"
    assert _online(s, ids) == [i % 30 + 1 for i in range(0, 3000, 150)]


def test_online_values_survive_a_kill_9_and_restart_of_redis(project, stack):
    """AOF with fsync every second: a crash of Redis loses no row that was materialized before it."""
    s, publish = project
    publish(_table(500))
    ids = [f"C{i:06d}" for i in range(0, 500, 10)]
    before = store.online_features(ids, s)
    assert None not in before["tickets_30d"]
    time.sleep(2.0)  # past the once-a-second fsync of the append-only file
    redis = stack.service("redis")
    rec = process.read_pid(stack.pid_file(redis))
    assert rec is not None
    victim = psutil.Process(rec.pid)
    victim.kill()
    victim.wait(timeout=30)
    assert not redis.health()
    stack.up(only=["redis"])
    assert store.online_features(ids, s) == before


def test_dropping_a_project_leaves_every_other_project_and_it_can_be_applied_again(project, settings):
    s, publish = project
    publish(_table(10))
    other = settings.model_copy(update={"feast_project": f"t_{uuid.uuid4().hex[:12]}"})
    store.apply(other)
    try:
        store.drop_project(s)
        assert [fv.name for fv in store.get_store(other).list_feature_views()] == ["customer_stats"]
        with pytest.raises(FeatureServiceNotFoundException):
            _online(s, ["C000001"])
        store.apply(s)  # the same name again: no version history left behind to collide with
        assert publish(_table(10))["written"] == {"customer_stats": 10}
    finally:
        store.drop_project(other)
