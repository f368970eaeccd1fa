"""Feast helpers: the store for the active profile, apply, materialize, training sets, online lookup."""

from __future__ import annotations

import importlib.util
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from mlplatform.config.settings import Settings, get_settings

log = logging.getLogger(__name__)


def feature_repo(s: Settings) -> Path:
    return s.repo_root / "feature_repo"


def features_path(s: Settings) -> Path:
    return s.data_dir / "features" / "customer_daily"


def labels_path(s: Settings) -> Path:
    return s.data_dir / "datasets" / "labelled_tickets"


def _export_env(s: Settings) -> None:
    os.environ.setdefault("MLP_FEAST_REGISTRY", s.postgres_dsn("feast", driver="postgresql+psycopg"))
    os.environ.setdefault("MLP_FEAST_REDIS", s.redis_url)
    os.environ.setdefault("MLP_HOME", str(s.home))
    os.environ.setdefault("MLP_FEATURES_URI", str(features_path(s)))


def get_store(s: Settings | None = None) -> Any:
    """A FeatureStore for the active profile (feature_store.yaml or feature_store.cluster.yaml)."""
    from feast import FeatureStore

    s = s or get_settings()
    _export_env(s)
    if s.feast_mode == "embedded":
        (s.home / "feast").mkdir(parents=True, exist_ok=True)
        name = "feature_store.embedded.yaml"
    else:
        name = "feature_store.yaml" if s.profile == "local" else "feature_store.cluster.yaml"
    return FeatureStore(repo_path=str(feature_repo(s)), fs_yaml_file=feature_repo(s) / name)


def definitions(s: Settings) -> ModuleType:
    _export_env(s)
    path = feature_repo(s) / "definitions.py"
    spec = importlib.util.spec_from_file_location("mlp_feature_definitions", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply(s: Settings | None = None) -> list[str]:
    """Register the repo's entities, sources, views and services (the `feast apply` step). Idempotent."""
    s = s or get_settings()
    store = get_store(s)
    objects = definitions(s).OBJECTS
    store.apply(objects)
    return [o.name for o in objects]


def materialize(
    s: Settings | None = None, end: datetime | None = None, days: int = 60, rebuild: bool = True
) -> dict[str, Any]:
    """Load the latest feature values into the online store (Redis).

    The Spark job recomputes whole tables, so a day's row can change after late events arrive while keeping
    its event timestamp. Feast's Redis writer skips a row whose timestamp equals the stored one, which
    would leave the stale value online; ``rebuild`` clears each view's online rows first.
    """
    s = s or get_settings()
    store = get_store(s)
    end = end or datetime.now(UTC) + timedelta(days=1)
    start = end - timedelta(days=days)
    if rebuild:
        online = store._get_provider().online_store  # noqa: SLF001 - Feast exposes no public per-view clear
        if hasattr(online, "delete_table"):  # Redis; SQLite overwrites rows of equal timestamp anyway
            for fv in store.list_feature_views():
                online.delete_table(store.config, fv)
    store.materialize(start_date=start, end_date=end)
    return {"start": start.isoformat(), "end": end.isoformat()}


def training_set(
    entity_df: Any, s: Settings | None = None, service: str | None = None, row_key: str = "ticket_id"
) -> Any:
    """Point-in-time correct join of entity rows (customer_id, event_timestamp, ...) with the service.

    Feast's file (dask) offline store drops an entity row whose customer has feature rows that all lie
    after the row's timestamp (instead of returning nulls). We join the result back onto every entity row
    by ``row_key`` so no labelled example is lost; those rows get null features, as they should.
    """
    s = s or get_settings()
    store = get_store(s)
    fs = store.get_feature_service(service or s.feature_service)
    joined = store.get_historical_features(entity_df=entity_df, features=fs).to_df()
    names = [f.name for proj in fs.feature_view_projections for f in proj.features]
    return entity_df.merge(joined[[row_key, *names]], on=row_key, how="left")


def online_features(customer_ids: list[str], s: Settings | None = None, service: str | None = None) -> dict[str, list]:
    s = s or get_settings()
    store = get_store(s)
    fs = store.get_feature_service(service or s.feature_service)
    rows = [{"customer_id": c} for c in customer_ids]
    result: dict[str, list] = store.get_online_features(features=fs, entity_rows=rows).to_dict()
    return result


def feature_names(s: Settings | None = None, service: str | None = None) -> list[str]:
    """Feature column names of the service, in a stable order (the model's tabular input)."""
    s = s or get_settings()
    fs = get_store(s).get_feature_service(service or s.feature_service)
    return [f.name for proj in fs.feature_view_projections for f in proj.features]
