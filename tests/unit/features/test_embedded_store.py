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
        monkeypatch.delenv(key, raising=False)
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
