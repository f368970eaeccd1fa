"""The stages of the reference pipeline as plain typed functions (no Airflow import). DAGs wrap them with
``@task``; tests call them directly. Each takes and returns references (URIs, versions, counts)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlplatform.config.settings import Settings, get_settings

log = logging.getLogger(__name__)


def landing_root(s: Settings) -> Path:
    return s.data_dir / "landing"


def produce_events(events: int, seed: int, s: Settings | None = None, bootstrap: str | None = None) -> dict[str, int]:
    """Generate reproducible synthetic events and write them to the ticket and outcome topics."""
    from mlplatform.ingest.kafka import DLQ_SUFFIX, ensure_topics, produce_records
    from mlplatform.ingest.synth import SynthConfig, generate

    s = s or get_settings()
    bootstrap = bootstrap or s.kafka_bootstrap
    topics = [s.tickets_topic, s.outcomes_topic]
    ensure_topics(bootstrap, [*topics, *(t + DLQ_SUFFIX for t in topics)])
    tickets, outcomes = generate(SynthConfig(events=events, seed=seed))
    return {
        "tickets": produce_records(bootstrap, s.tickets_topic, tickets, "customer_id"),
        "outcomes": produce_records(bootstrap, s.outcomes_topic, outcomes, "customer_id"),
    }


def ingest_topic(
    topic: str,
    run_id: str,
    max_records: int = 0,
    s: Settings | None = None,
    bootstrap: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    from mlplatform.ingest.kafka import consume_to_parquet

    s = s or get_settings()
    batch = consume_to_parquet(
        bootstrap or s.kafka_bootstrap, topic, group or s.consumer_group, landing_root(s), run_id, max_records or None
    )
    return batch.to_dict()


def validate_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Validate one landed batch with its topic's suite; raises ValidationFailed (chain stops)."""
    from mlplatform.validation.suites import validate_landing

    report = validate_landing(batch["uri"], batch["topic"])
    return {"topic": batch["topic"], "uri": batch["uri"], "rows": report.rows, "expectations": report.evaluated}


def spark_application_args(s: Settings | None = None) -> list[str]:
    from mlplatform.features.store import features_path, labels_path

    s = s or get_settings()
    root = landing_root(s)
    return [
        "--tickets-root",
        str(root / s.tickets_topic),
        "--outcomes-root",
        str(root / s.outcomes_topic),
        "--features-out",
        str(features_path(s)),
        "--labels-out",
        str(labels_path(s)),
    ]


def spark_submit_kwargs(s: Settings | None = None) -> dict[str, Any]:
    """SparkSubmitOperator arguments of the feature job (the master comes from the spark_default connection)."""
    s = s or get_settings()
    return {
        "application": str(s.repo_root / "spark_jobs" / "customer_features.py"),
        "application_args": spark_application_args(s),
        "conn_id": "spark_default",
        "name": "mlp-customer-features",
        "conf": {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false"},
    }


def publish_features(s: Settings | None = None) -> dict[str, Any]:
    """`feast apply` then materialize into the online store."""
    from mlplatform.features import store

    s = s or get_settings()
    applied = store.apply(s)
    window = store.materialize(s)
    return {"applied": applied, **window}


def training_snapshot(run_id: str, s: Settings | None = None) -> dict[str, Any]:
    """Write the point-in-time training set (labelled tickets joined with Feast features) as Parquet."""
    import pandas as pd

    from mlplatform.features import store
    from mlplatform.ingest.kafka import safe_run_id

    s = s or get_settings()
    labels_dir = store.labels_path(s)
    entity_df = pd.concat([pd.read_parquet(f) for f in sorted(labels_dir.glob("*.parquet"))], ignore_index=True)
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    df = store.training_set(entity_df, s)
    out = s.data_dir / "snapshots" / safe_run_id(run_id) / "training_set.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(out)
    return {
        "uri": out.as_uri(),
        "path": str(out),
        "rows": len(df),
        "positives": int(df["escalated"].sum()),
        "feature_service": s.feature_service,
        "features": store.feature_names(s),
    }


def train_local(
    snapshot: dict[str, Any], run_id: str, conf: dict[str, Any], s: Settings | None = None
) -> dict[str, Any]:
    """Train with the local launcher (subprocess; GPU when present and allowed, else CPU)."""
    from mlplatform.ingest.kafka import safe_run_id
    from mlplatform.launch.local import run_training

    s = s or get_settings()
    device = conf.get("train_device", "auto")
    overrides = {
        "data": snapshot["path"],
        "feature_columns": snapshot["features"],
        "dataset_uri": snapshot["uri"],
        "feature_service": snapshot["feature_service"],
        "encoder": conf.get("encoder", "minilm"),
        "epochs": conf.get("epochs", 1),
        "max_steps": conf.get("max_steps", 0),
        "max_length": conf.get("max_length", 64),
        "batch_size": conf.get("batch_size", 32),
        "device": device,
        "output_dir": str(s.data_dir / "train" / safe_run_id(run_id)),
        "cache_dir": str(s.data_dir / "cache" / "tokens"),
        "mlflow_tracking_uri": s.mlflow_uri,
        "experiment": s.model_name,
        "run_name": f"train-{safe_run_id(run_id)}",
    }
    return run_training(s.repo_root / "training" / "configs" / "local_cpu.yaml", overrides, s.repo_root)


def register(result: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    from mlplatform.registry.gate import register_and_gate

    s = s or get_settings()
    return register_and_gate(s.mlflow_uri, s.model_name, result["run_id"], result["model_uri"]).to_dict()


def deploy(s: Settings | None = None) -> dict[str, Any]:
    """Serve models:/<name>@champion locally and smoke-test it with one real request."""
    from mlplatform.serving.deploy import smoke_test, start_server

    s = s or get_settings()
    url = start_server(s, f"models:/{s.model_name}@champion")
    return {"url": url, "smoke_test": smoke_test(s)}
