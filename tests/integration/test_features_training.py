"""Spark job, Feast (PostgreSQL registry, Redis online store) and training tracked by the real MLflow server."""

from __future__ import annotations

import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from mlplatform.features import store
from mlplatform.ingest.consume import IngestError
from mlplatform.ingest.landing import Landing
from mlplatform.ingest.watch import ingestion_lag
from mlplatform.pipeline import stages
from mlplatform.registry.evaluation import load_eval_set
from mlplatform.serving.server import served_feature_service
from mlplatform.validation.suites import read_files
from training.config import load
from training.loop import train

from .sparkjob import submit_feature_job


@pytest.fixture(scope="module")
def published(settings, stack):
    """Events through Kafka, validated, Spark features, feast apply + materialize."""
    stages.produce_events(events=400, seed=SEED + 11)
    run = f"it-{uuid.uuid4().hex[:6]}"
    kafka = {"bootstrap.servers": settings.kafka_bootstrap}
    for topic in (settings.tickets_topic, settings.outcomes_topic):
        # The stack's own ingest_events (woken by the Kafka watcher) shares the group and may land some or
        # all of these first, or collide with this ingest (which then fails, landing nothing twice, and is
        # retried as an Airflow task would be): in the end nothing is left behind the group.
        batch = Retrying(
            retry=retry_if_exception_type(IngestError), stop=stop_after_attempt(5), wait=wait_fixed(3), reraise=True
        )(stages.ingest_topic, topic, run)
        assert ingestion_lag(kafka, topic, settings.consumer_group) == 0, batch
        stages.validate_batch(batch, run)
    out = submit_feature_job("local[2]", stages.spark_application_args(settings))
    assert out.returncode == 0, out.stderr[-3000:]
    published = stages.publish_features(settings)
    return {"run": run, **published}


SEED = uuid.uuid4().int % 5000  # fresh events each session: the topics outlive a test run


def test_feast_online_lookup_serves_the_latest_offline_row(settings, published):
    offline = pd.read_parquet(store.features_path(settings))
    latest = offline.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    customers = list(latest.index[:5])
    online = store.online_features(customers, settings)
    for i, cid in enumerate(online["customer_id"]):
        assert online["tickets_30d"][i] == latest.loc[cid, "tickets_30d"]
        assert online["is_enterprise"][i] == latest.loc[cid, "is_enterprise"]
    assert store.online_features(["C999999"], settings)["tickets_30d"] == [None]


def test_training_set_is_point_in_time_correct_and_keeps_every_label(settings, published):
    snap = stages.training_snapshot(published["run"], settings)
    train_rows = pd.read_parquet(snap["path"])
    held = load_eval_set(snap["eval_set"]["uri"], snap["eval_set"]["sha256"])
    labels = pd.read_parquet(store.labels_path(settings))
    # every label lands once: in the training snapshot or, if it is among the latest days, the evaluation set
    assert len(train_rows) == snap["rows"]
    assert len(held) == snap["eval_set"]["rows"] > 0
    assert sorted([*train_rows.ticket_id, *held.ticket_id]) == sorted(labels.ticket_id)
    cutoff = pd.Timestamp(snap["eval_set"]["start"])
    assert train_rows.event_timestamp.max() < cutoff <= held.event_timestamp.min()
    df = pd.concat([train_rows, held], ignore_index=True)
    # every validated ticket counts in the features, labelled or not (its outcome may be pending or rejected)
    validated = Landing(stages.landing_root(settings), settings.tickets_topic).validated_files()
    tickets = read_files(validated).drop_duplicates("ticket_id").rename(columns={"created_at": "event_timestamp"})
    # features stamped at the end of day D count tickets up to D: never the ticket's own day or later
    sample = df.dropna(subset=["tickets_30d"]).sample(50, random_state=0)
    for _, row in sample.iterrows():
        day_start = row["event_timestamp"].floor("D")
        window = tickets[
            (tickets.customer_id == row.customer_id)
            & (tickets.event_timestamp < day_start)
            & (tickets.event_timestamp >= day_start - pd.Timedelta(days=30))
        ]
        assert row["tickets_30d"] <= len(window)


@pytest.fixture(scope="module")
def trained(settings, published, tmp_path_factory):
    """The training program run on the published snapshot, tracked by the real MLflow server."""
    tmp_path = tmp_path_factory.mktemp("train")
    snap = stages.training_snapshot(published["run"] + "-t", settings)
    cfg = load(
        None,
        {
            "data": snap["path"],
            "encoder": "minilm",
            "init": "random",
            "arch": "tiny",
            "max_length": 48,
            "batch_size": 32,
            "max_steps": 8,
            "device": "cpu",
            "num_workers": 0,
            "log_every": 2,
            "output_dir": str(tmp_path / "out"),
            "cache_dir": str(tmp_path / "cache"),
            "feature_columns": snap["features"],
            "mlflow_tracking_uri": settings.mlflow_uri,
            "experiment": "it-training",
            "system_metrics_interval_s": 0.5,
            "dataset_uri": snap["uri"],
            "feature_service": snap["feature_service"],
        },
    )
    return snap, train(cfg)


def test_training_run_is_fully_tracked_in_mlflow_and_gated(settings, trained):
    snap, result = trained
    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert {"lr", "batch_size", "max_steps", "encoder", "n_train", "feature_columns_used"} <= set(run.data.params)
    assert {"train_loss", "eval_roc_auc", "eval_f1", "eval_accuracy", "samples_per_s"} <= set(run.data.metrics)
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), run.data.metrics.keys()
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4
    assert run.data.tags["dataset_uri"] == snap["uri"]
    assert run.data.tags["feature_service"] == "escalation_features"
    assert run.data.tags["gpu_type"] == "cpu"
    assert len(run.data.tags["git_sha"]) >= 7
    mlflow.set_tracking_uri(settings.mlflow_uri)
    model = mlflow.pyfunc.load_model(result["model_uri"])
    assert model.metadata.signature is not None
    frame = pd.read_parquet(snap["path"]).head(4)[["subject", "body", *snap["features"]]]
    preds = model.predict(frame.astype({c: "float64" for c in snap["features"]}))
    assert preds["escalation_probability"].between(0, 1).all()

    # through the register step: the version gets a Feast service of its own, recorded on version and run,
    # is judged on the snapshot's evaluation set and gets a model card; the champion moves only on promote
    s = settings.model_copy(update={"model_name": f"it_fs_{uuid.uuid4().hex[:6]}"})
    decision = stages.register(result, snap, s=s)
    assert (decision["version"], decision["promoted"], decision["reason"]) == ("1", True, "no champion yet")
    assert decision["eval_set"]["sha256"] == snap["eval_set"]["sha256"]
    assert 0 <= decision["scores"]["brier"] <= 1
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(s.model_name, "champion")
    version = client.get_model_version(s.model_name, "1")
    assert version.tags["gate.decision"] == "promote"
    assert version.tags["gate.eval_set.sha256"] == snap["eval_set"]["sha256"]
    assert version.tags["data.eval_cutoff"] == snap["eval_set"]["start"]
    assert version.tags["model_card"] == decision["model_card"]
    card = mlflow.artifacts.load_text(decision["model_card"])
    assert f"sha256 `{snap['eval_set']['sha256']}`" in card
    assert "## Lineage (landed Kafka ranges)" in card
    assert f"`{settings.tickets_topic}`:" in card
    promoted = stages.promote_champion(decision, None, s=s)
    assert (promoted["changed"], promoted["to"], promoted["who"]) == (True, "1", "gate (no approval required)")
    assert client.get_model_version_by_alias(s.model_name, "champion").version == "1"
    retry = stages.register(result, snap, s=s)  # a retried task: same version, same service, no new alias move
    assert (retry["version"], retry["reason"]) == ("1", "already champion (retry)")
    assert stages.promote_champion(retry, None, s=s)["changed"] is False
    service = decision["feature_service"]
    assert service == f"{settings.feature_service}_v1"
    frozen = store.get_store(s).get_feature_service(service)
    assert [f.name for p in frozen.feature_view_projections for f in p.features] == result["feature_columns"]
    assert frozen.tags["mlflow.run_id"] == result["run_id"]
    assert client.get_model_version(s.model_name, "1").tags["feast.feature_service"] == service
    assert client.get_run(result["run_id"]).data.tags["feast.feature_service"] == service
    assert served_feature_service(settings.mlflow_uri, result["run_id"], "base") == service
    online = store.get_store(s).get_online_features(features=frozen, entity_rows=[{"customer_id": "C000001"}])
    assert set(online.to_dict()) == {"customer_id", *result["feature_columns"]}
    with pytest.raises(LookupError, match="no_such_feature"):
        store.version_service(s, 99, ["tickets_7d", "no_such_feature"])


def test_batch_score_scores_a_day_of_validated_tickets_with_the_champion(settings, trained):
    snap, result = trained
    s = settings.model_copy(update={"model_name": f"it_bs_{uuid.uuid4().hex[:6]}"})
    with pytest.raises(stages.NoChampionError):
        stages.batch_score("2026-01-01", s=s)
    decision = stages.register(result, snap, s=s)
    stages.promote_champion(decision, None, s=s)
    validated = read_files(Landing(stages.landing_root(settings), settings.tickets_topic).validated_files())
    days = pd.to_datetime(validated["created_at"], utc=True).dt.date
    day = days.value_counts().index[0]  # the busiest day
    out = stages.batch_score(day.isoformat(), s=s)
    assert out["rows"] == validated[days == day]["ticket_id"].nunique() > 0
    assert out["model_version"] == decision["version"]
    scores = pd.read_parquet(out["uri"])
    assert len(scores) == out["rows"]
    assert scores["escalation_probability"].between(0, 1).all()
    assert set(scores["model_version"]) == {decision["version"]}
    assert (pd.to_datetime(scores["created_at"], utc=True).dt.date == day).all()
    assert out["escalate"] == int(scores["escalate"].sum())
    again = stages.batch_score(day.isoformat(), s=s)  # a retry: the same file, the same rows
    assert again["rows"] == out["rows"]
    assert sorted(pd.read_parquet(again["uri"]).ticket_id) == sorted(scores.ticket_id)
    assert stages.batch_score("1999-01-01", s=s)["rows"] == 0
