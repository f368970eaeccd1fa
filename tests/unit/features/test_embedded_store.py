"""Feast in its embedded fallback (file registry, SQLite online store): apply, materialize, online lookup and
a point-in-time training set, with no service running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mlplatform.config.settings import Settings
from mlplatform.features import store


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    for key in ("MLP_FEAST_REGISTRY", "MLP_FEAST_REDIS", "MLP_HOME", "MLP_FEATURES_URI"):
        # set, then removed: monkeypatch records the key either way, so what the store exports during the
        # test (os.environ.setdefault) is taken back after it and never reaches a later test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    s = Settings(home=tmp_path / "home", feast_mode="embedded")
    day = datetime(2026, 5, 1, tzinfo=UTC)
    rows = [
        {
            "customer_id": "C000001",
            "event_timestamp": day,
            "tickets_7d": 1,
            "tickets_30d": 1,
            "high_priority_share_30d": 0.0,
            "avg_body_len_30d": 10.0,
            "is_enterprise": 0,
        },
        {
            "customer_id": "C000001",
            "event_timestamp": day + timedelta(days=2),
            "tickets_7d": 3,
            "tickets_30d": 3,
            "high_priority_share_30d": 0.5,
            "avg_body_len_30d": 12.0,
            "is_enterprise": 0,
        },
        {
            "customer_id": "C000002",
            "event_timestamp": day + timedelta(days=1),
            "tickets_7d": 2,
            "tickets_30d": 2,
            "high_priority_share_30d": 1.0,
            "avg_body_len_30d": 30.0,
            "is_enterprise": 1,
        },
    ]
    path = store.features_path(s)
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(path / "part-0.parquet")
    return s, day


def test_apply_materialize_and_look_up_without_services(embedded):
    s, day = embedded
    assert "customer_stats" in store.apply(s)
    store.materialize(s, end=day + timedelta(days=5), days=30)
    online = store.online_features(["C000001", "C000002", "C404"], s)
    assert online["tickets_30d"] == [3, 2, None]
    assert online["is_enterprise"] == [0, 1, None]


def test_training_set_is_as_of_each_row_and_keeps_rows_without_features(embedded):
    s, day = embedded
    store.apply(s)
    entity = pd.DataFrame(
        {
            "ticket_id": ["a", "b", "c"],
            "customer_id": ["C000001", "C000001", "C000002"],
            "event_timestamp": [day + timedelta(hours=12), day + timedelta(days=3), day],  # c: before any row
        }
    )
    df = store.training_set(entity, s).set_index("ticket_id")
    assert df.loc["a", "tickets_30d"] == 1  # the later row is in a's future
    assert df.loc["b", "tickets_30d"] == 3
    assert pd.isna(df.loc["c", "tickets_30d"])  # kept, with null features


def _rewrite_features(s, mutate) -> None:  # type: ignore[no-untyped-def]
    """Replace the offline table the way the Spark job does: a whole new table under the same path."""
    path = store.features_path(s)
    df = pd.read_parquet(path)
    mutate(df)
    for f in path.iterdir():
        f.unlink()
    df.to_parquet(path / "part-0.parquet")


def test_materialize_writes_only_new_or_changed_rows_and_a_correction_replaces_its_value(embedded):
    s, day = embedded
    store.apply(s)
    end = day + timedelta(days=5)
    assert store.materialize(s, end=end, days=30)["written"] == {"customer_stats": 2}
    assert store.materialize(s, end=end, days=30)["written"] == {"customer_stats": 0}  # nothing changed

    def correct(df: pd.DataFrame) -> None:  # a late event recomputes C000001's last day: same event time
        df.loc[df.event_timestamp == df.event_timestamp.max(), "tickets_30d"] = 4

    _rewrite_features(s, correct)
    assert store.materialize(s, end=end, days=30)["written"] == {"customer_stats": 1}
    assert store.online_features(["C000001", "C000002"], s)["tickets_30d"] == [4, 2]


def test_materialize_writes_everything_again_when_the_online_store_was_emptied(embedded):
    s, day = embedded
    store.apply(s)
    end = day + timedelta(days=5)
    store.materialize(s, end=end, days=30)
    (s.home / "feast" / "online.db").unlink()  # the online store is lost; publishing applies, then materializes
    store.apply(s)
    assert store.online_features(["C000001"], s)["tickets_30d"] == [None]
    assert store.materialize(s, end=end, days=30)["written"] == {"customer_stats": 2}
    assert store.online_features(["C000001", "C000002"], s)["tickets_30d"] == [3, 2]


def test_every_training_row_sees_exactly_the_newest_feature_row_at_or_before_it(embedded):
    """Two-sided point-in-time check on every row, with rows written out of order (late and backfilled
    days) and entity rows that fall exactly on a feature row's stamp, before any row, or past the TTL."""
    import numpy as np

    s, day = embedded
    rng = np.random.default_rng(7)
    customers = [f"C{i:06d}" for i in range(40)]
    feats = []
    for cid in customers:
        days = sorted(rng.choice(120, size=rng.integers(1, 25), replace=False))
        for d in days:
            feats.append({"customer_id": cid, "event_timestamp": day + timedelta(days=int(d), hours=23, minutes=59)})
    features = pd.DataFrame(feats).sample(frac=1.0, random_state=3).reset_index(drop=True)  # late/backfilled order
    n = len(features)
    features["tickets_7d"] = np.arange(n)
    features["tickets_30d"] = np.arange(n) * 10  # a row's identity: which feature row a training row saw
    features["high_priority_share_30d"] = 0.5
    features["avg_body_len_30d"] = 1.0
    features["is_enterprise"] = 0
    path = store.features_path(s)
    for f in path.iterdir():
        f.unlink()
    features.to_parquet(path / "part-0.parquet")
    store.apply(s)

    entity = pd.DataFrame(
        {
            "customer_id": rng.choice(customers, size=600),
            "event_timestamp": [day + timedelta(seconds=int(x)) for x in rng.integers(-5 * 86400, 130 * 86400, 600)],
        }
    )
    exact = features.sample(60, random_state=1)[["customer_id", "event_timestamp"]]  # ties: stamp == row's stamp
    entity = pd.concat([entity, exact], ignore_index=True)
    entity["ticket_id"] = [f"t{i}" for i in range(len(entity))]
    got = store.training_set(entity, s).set_index("ticket_id")

    ttl = store.definitions(s).customer_stats.ttl
    for row in entity.itertuples():
        eligible = features[
            (features.customer_id == row.customer_id)
            & (features.event_timestamp <= row.event_timestamp)
            & (features.event_timestamp >= row.event_timestamp - ttl)
        ]
        seen = got.loc[row.ticket_id, "tickets_30d"]
        if eligible.empty:
            assert pd.isna(seen), row
        else:
            assert seen == eligible.sort_values("event_timestamp").iloc[-1].tickets_30d, row
    assert len(got) == len(entity)
