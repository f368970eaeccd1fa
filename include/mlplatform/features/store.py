"""Feast helpers: the store for the active profile, apply, materialize, training sets, online lookup."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from mlplatform.config.settings import Settings, get_settings
from mlplatform.locks import file_lock

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


def get_store(s: Settings | None = None, serving: bool = False, cache_ttl_seconds: int | None = None) -> Any:
    """A FeatureStore for the active profile (feature_store.yaml or feature_store.cluster.yaml).

    ``serving``: a long-lived lookup process (the model server). Its registry cache is refreshed by
    Feast's background thread (``cache_mode: thread``) instead of by the first lookup after the TTL, so
    no request waits on a registry read; such a process sees registry changes up to the TTL late."""
    from feast import FeatureStore

    s = s or get_settings()
    _export_env(s)
    if s.feast_mode == "embedded":
        (s.home / "feast").mkdir(parents=True, exist_ok=True)
        name = "feature_store.embedded.yaml"
    else:
        name = "feature_store.yaml" if s.profile == "local" else "feature_store.cluster.yaml"
    from feast.repo_config import load_repo_config

    config = load_repo_config(feature_repo(s), feature_repo(s) / name)
    if config.project != s.feast_project:  # MLP_FEAST_PROJECT: a namespace of its own (a test, a team)
        config = config.model_copy(update={"project": s.feast_project})
    if serving or cache_ttl_seconds is not None:
        registry = config.registry.model_dump()
        registry.update({"cache_mode": "thread"} if serving else {})
        if cache_ttl_seconds is not None:
            registry["cache_ttl_seconds"] = cache_ttl_seconds
        config = config.model_copy(update={"registry_config": registry})
        config._registry = None  # noqa: SLF001 - parsed again from registry_config
    return FeatureStore(repo_path=str(feature_repo(s)), config=config)


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


def version_service(s: Settings, version: str | int, features: list[str], tags: dict[str, str] | None = None) -> str:
    """Freeze the features one model version was trained on as a FeatureService of its own,
    ``<feature_service>_v<version>`` (the base service may change later; this one does not), and apply it.

    Each feature is taken from the online view that defines it, as projections of those views, so the
    service yields exactly ``features``. Idempotent: a retry applies the same object again."""
    from feast import FeatureService

    store = get_store(s)
    name = f"{s.feature_service}_v{version}"
    wanted = list(dict.fromkeys(features))
    projections = []
    for fv in store.list_feature_views():
        cols = [f for f in wanted if f in {x.name for x in fv.features}]
        if cols:
            projections.append(fv[cols])
            wanted = [f for f in wanted if f not in cols]
    if wanted:
        raise LookupError(f"features of model version {version} are in no feature view of {store.project}: {wanted}")
    service = FeatureService(
        name=name,
        features=projections,
        description=f"Features of {s.model_name} version {version}, as trained",
        tags={"mlflow.model": s.model_name, "mlflow.version": str(version), **(tags or {})},
    )
    store.apply([service])
    return name


def drop_project(s: Settings) -> None:
    """Remove one Feast project (``s.feast_project``): its online rows, its registry objects and the
    snapshots of what was materialized, and nothing else.

    Not ``FeatureStore.teardown()``: in Feast 0.67 that deletes *every* project in the registry. And the SQL
    registry's ``delete_project`` leaves the views' version history behind, so a later apply of a project of
    the same name fails on a duplicate key: that history is deleted here too."""
    import shutil

    fs = get_store(s)
    fs._get_provider().teardown_infra(fs.project, fs.list_feature_views(), fs.list_entities())  # noqa: SLF001
    fs.registry.delete_project(fs.project)
    engine = getattr(fs.registry, "write_engine", None)
    if engine is not None:
        from feast.infra.registry.sql import feature_view_version_history as history
        from sqlalchemy import delete

        with engine.begin() as conn:
            conn.execute(delete(history).where(history.c.project_id == fs.project))
    shutil.rmtree(_snapshot_dir(s), ignore_errors=True)


def _snapshot_dir(s: Settings) -> Path:
    return s.data_dir / "features" / "_online" / s.feast_project


def online_snapshot_path(s: Settings, view: str) -> Path:
    """What the last materialization wrote online for ``view``: the newest row per entity (Parquet)."""
    return _snapshot_dir(s) / f"{view}.parquet"


@contextlib.contextmanager
def _publish_lock(s: Settings) -> Iterator[None]:
    """One materialization at a time per store (the online store is written without Feast's timestamp check,
    so two publishers must not interleave): a PostgreSQL advisory lock on the registry database, released
    by the server should the holder die; a file lock for the embedded store."""
    if s.feast_mode == "embedded":
        with file_lock(s.home / "feast" / ".materialize.lock"):
            yield
        return
    import psycopg2

    conn = psycopg2.connect(s.postgres_dsn("feast", driver="postgresql"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext('mlplatform.feast.materialize'))")
        yield
    finally:
        conn.close()  # the session's end releases the lock


def _online_lost(store: Any, fv: Any, previous: Any, keys: list[str], sample: int = 64) -> bool:
    """Whether entities the last run wrote are missing online (the store was emptied or replaced since):
    then the snapshot cannot be trusted and every row is written again."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    rows = previous.sample(min(len(previous), sample), random_state=0)
    types = {c.name: c.dtype.to_value_type() for c in fv.entity_columns}
    columns = {k: python_values_to_proto_values(rows[k].tolist(), types[k]) for k in keys}
    entity_keys = [EntityKey(join_keys=keys, entity_values=[columns[k][i] for k in keys]) for i in range(len(rows))]
    found = store._get_provider().online_read(store.config, fv, entity_keys)  # noqa: SLF001
    return any(ts is None for ts, _ in found)


def _changed_rows(latest: Any, previous: Any, keys: list[str], columns: list[str]) -> Any:
    """Rows of ``latest`` that are new, or differ from ``previous`` in the timestamp or any feature."""
    if previous is None or previous.empty:
        return latest
    merged = latest.merge(previous, on=keys, how="left", suffixes=("", "__old"), indicator=True)
    changed = merged["_merge"] == "left_only"
    for col in columns:
        new, old = merged[col], merged[f"{col}__old"]
        changed |= ~((new == old) | (new.isna() & old.isna()))
    return latest[changed.to_numpy()]


def materialize(s: Settings | None = None, end: datetime | None = None, days: int = 60) -> dict[str, Any]:
    """Bring the online store up to the offline table, writing only what is new or changed.

    For each online view, Feast's own offline query takes the newest row per entity in the window (its
    ``created_timestamp_column``, when a source has one, breaks ties of equal event time). Those rows are
    compared with what the last run wrote (``online_snapshot_path``) and only the difference goes through
    ``write_to_online_store``. Nothing is deleted first, so a lookup never misses while this runs. The Spark
    job recomputes a day's row when late events arrive while keeping its event timestamp: Feast's Redis
    writer skips a row whose timestamp equals the stored one, so the store runs with ``skip_dedup`` (see
    feature_store.yaml) and the ordering check is ours (one publisher at a time, newest row per entity).
    An online store found emptied since the last run gets every row again. The window is recorded as a
    materialization interval in the registry, as ``feast materialize`` does.
    """
    import pandas as pd

    s = s or get_settings()
    store = get_store(s)
    end = end or datetime.now(UTC) + timedelta(days=1)
    start = end - timedelta(days=days)
    offline = store._get_provider().offline_store  # noqa: SLF001 - the provider's offline store, as materialize uses
    written: dict[str, int] = {}
    with _publish_lock(s):
        for fv in store.list_feature_views():
            if not fv.online:
                continue
            src = fv.batch_source
            keys = [e.name for e in fv.entity_columns]
            columns = [f.name for f in fv.features]
            ts = src.timestamp_field
            latest = offline.pull_latest_from_table_or_query(
                config=store.config,
                data_source=src,
                join_key_columns=keys,
                feature_name_columns=columns,
                timestamp_field=ts,
                created_timestamp_column=src.created_timestamp_column or None,
                start_date=start,
                end_date=end,
            ).to_df()
            latest = latest[[*keys, ts, *columns]].reset_index(drop=True)
            snap = online_snapshot_path(s, fv.name)
            previous = pd.read_parquet(snap) if snap.exists() else None
            if previous is not None and len(previous) and _online_lost(store, fv, previous, keys):
                log.warning("%s: rows the last materialization wrote are missing online: writing all", fv.name)
                previous = None
            changed = _changed_rows(latest, previous, keys, [ts, *columns])
            if len(changed):
                store.write_to_online_store(fv.name, df=changed, allow_registry_cache=False)
            snap.parent.mkdir(parents=True, exist_ok=True)
            tmp = snap.with_name(f"{snap.name}.{os.getpid()}.tmp")
            latest.to_parquet(tmp, index=False)
            os.replace(tmp, snap)  # after the write: a crash in between only rewrites the same rows next time
            store.registry.apply_materialization(fv, store.project, start, end)
            written[fv.name] = len(changed)
            log.info("materialized %s: %d of %d entities new or changed", fv.name, len(changed), len(latest))
    return {"start": start.isoformat(), "end": end.isoformat(), "written": written}


def training_set(
    entity_df: Any, s: Settings | None = None, service: str | None = None, row_key: str = "ticket_id"
) -> Any:
    """Point-in-time correct join of entity rows (customer_id, event_timestamp, ...) with the service.

    The result is joined back onto every entity row by ``row_key``, so no labelled example is lost
    whichever offline store runs the join: Feast's file (dask) store drops an entity row whose customer has
    feature rows that all lie after the row's timestamp (instead of returning nulls); such rows get null
    features, as they should. (The default DuckDB store keeps them.)
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
