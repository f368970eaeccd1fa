"""The stages of the reference pipeline as plain typed functions (no Airflow import). DAGs wrap them with
``@task``; tests call them directly. Each takes and returns references (URIs, versions, counts)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from mlplatform.config.settings import Settings, get_settings
from mlplatform.logs import staged
from mlplatform.pipeline import endpoints as endpoints_mod
from mlplatform.pipeline.endpoints import Endpoints

log = logging.getLogger(__name__)


def landing_root(s: Settings) -> Path:
    return s.landing_root


@staged("produce")
def produce_events(
    events: int,
    seed: int,
    s: Settings | None = None,
    endpoints: Endpoints | None = None,
    schema_version: int = 1,
    poison_rate: float = 0.0,
    late_rate: float = 0.0,
    days_back: int = 0,
    drift: float = 0.0,
) -> dict[str, Any]:
    """Generate reproducible synthetic events and write them, serialized through the Schema Registry, to
    the ticket and outcome topics. ``schema_version`` 2 writes the evolved ticket contract; ``poison_rate``
    mixes in records the ingest must dead-letter (one of each class in turn); ``late_rate`` makes that
    share of tickets carry an event time days back; ``days_back`` moves the whole window back (a backfill,
    which the tickets suite finds stale); ``drift`` (0..1) shifts the world the model learned (more frustrated
    customers: more tickets, more urgent, higher priority), which ``monitor_drift`` then measures."""
    from datetime import UTC, datetime, timedelta

    from confluent_kafka.serialization import MessageField, SerializationContext

    from mlplatform.ingest import poison
    from mlplatform.ingest.kafka import avro_serializer, ensure_topics, produce_values
    from mlplatform.ingest.schemas import subject_for_topic
    from mlplatform.ingest.synth import SynthConfig, generate

    s = s or get_settings()
    ep = endpoints or endpoints_mod.local(s)
    ensure_topics(ep.kafka, {s.tickets_topic: 3, s.outcomes_topic: 3})
    anchor = None
    if days_back:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        anchor = today - timedelta(days=3 + days_back)  # 3: the default window's own distance from today
    cfg = SynthConfig(
        events=events, seed=seed, schema_version=schema_version, late_rate=late_rate, anchor=anchor, drift=drift
    )
    tickets, outcomes = generate(cfg)
    t_spec, o_spec = subject_for_topic(s.tickets_topic), subject_for_topic(s.outcomes_topic)
    t_ser = avro_serializer(ep.registry, t_spec, schema_version)
    o_ser = avro_serializer(ep.registry, o_spec)
    t_ctx = SerializationContext(s.tickets_topic, MessageField.VALUE)
    o_ctx = SerializationContext(s.outcomes_topic, MessageField.VALUE)
    t_values = [(t["customer_id"].encode(), t_ser(t, t_ctx)) for t in tickets]
    o_values = [(o["customer_id"].encode(), o_ser(o, o_ctx)) for o in outcomes]
    poisoned: dict[str, int] = {}
    if poison_rate > 0 and t_values:
        t_values, poisoned = poison.interleave(t_values, poison_rate, seed, t_values[0][1], o_values[0][1])
    return {
        "tickets": produce_values(ep.kafka, s.tickets_topic, t_values) - sum(poisoned.values()),
        "outcomes": produce_values(ep.kafka, s.outcomes_topic, o_values),
        "poison": poisoned,
        "schema_version": schema_version,
        "drift": drift,
    }


@staged("ingest")
def ingest_topic(
    topic: str,
    run_id: str,
    max_records: int = 0,
    s: Settings | None = None,
    endpoints: Endpoints | None = None,
    group: str | None = None,
    max_seconds: float = 0,
    dlq_max_share: float = 0.05,
    parallelism: int = 0,
    landing: Path | None = None,
    chunk_records: int = 500_000,
    row_group_records: int = 50_000,
    schema_dir: Path | None = None,
) -> dict[str, Any]:
    """One bounded, exactly-once ingest of ``topic`` into its landing zone (what the DAG task and
    ``mlp ingest`` run). Raises DeadLetterAlert, after committing, when the DLQ share passes the bound."""
    from mlplatform.ingest.kafka import DeadLetterAlert, ingest
    from mlplatform.monitoring import metrics

    s = s or get_settings()
    ep = endpoints or endpoints_mod.local(s)
    try:
        result = ingest(
            topic,
            run_id,
            kafka=ep.kafka,
            registry=ep.registry,
            group=group or s.consumer_group,
            landing_root=landing or landing_root(s),
            max_records=max_records or None,
            max_seconds=max_seconds or None,
            parallelism=parallelism,
            dlq_max_share=dlq_max_share,
            chunk_records=chunk_records,
            row_group_records=row_group_records,
            schema_dir=schema_dir,
        )
    except DeadLetterAlert as alert:  # committed: its counts are as real as a green run's
        if alert.result is not None:
            metrics.ingest_pushed(alert.result.to_dict(), s)
        raise
    metrics.ingest_pushed(result.to_dict(), s)
    return result.to_dict()


def gx_root(s: Settings) -> Path:
    """The Great Expectations project: checkpoint results and the Data Docs site (``uncommitted/data_docs``)."""
    return s.home / "gx"


@staged("validate")
def validate_batch(batch: dict[str, Any], run_id: str, s: Settings | None = None) -> dict[str, Any]:
    """Validate the topic's landed ranges that no batch has claimed yet; raises ValidationFailed (chain stops)."""
    from mlplatform.ingest.kafka import safe_run_id
    from mlplatform.monitoring import metrics
    from mlplatform.validation.suites import ValidationFailed, validate_topic

    s = s or get_settings()
    topic = batch["topic"]
    batch_id = f"{safe_run_id(run_id)}.{uuid.uuid4().hex[:8]}"
    try:
        report = validate_topic(landing_root(s), topic, batch_id, gx_root=gx_root(s))
    except ValidationFailed as exc:
        if exc.report is not None:
            metrics.validation_pushed(topic, False, exc.report.rows, len(exc.report.failed), s)
        raise
    if report is None:  # nothing new landed: no batch, nothing to report
        return {"topic": topic, "batch": None, "rows": 0, "expectations": 0}
    metrics.validation_pushed(topic, True, report.rows, len(report.failed), s)
    return {
        "topic": topic,
        "batch": batch_id,
        "rows": report.rows,
        "expectations": report.evaluated,
        "docs": report.docs,
    }


def quarantine(s: Settings | None = None) -> list[dict[str, Any]]:
    """Every batch in quarantine, per contract topic: its id, rows, failed expectations and Data Docs page."""
    from mlplatform.ingest.landing import Landing

    s = s or get_settings()
    held = []
    for topic in (s.tickets_topic, s.outcomes_topic):
        for doc in Landing(landing_root(s), topic).quarantined():
            report = doc.get("report") or {}
            held.append(
                {
                    "topic": topic,
                    "batch": doc["batch"],
                    "rows": doc.get("rows", 0),
                    "at": doc.get("validated_at", ""),
                    "failed": [f["type"] + f" ({f['kwargs'].get('column', '')})" for f in report.get("failed", [])],
                    "docs": report.get("docs", ""),
                }
            )
    return held


@staged("redrive")
def redrive_batches(
    batch: str = "", topic: str = "", overrides: dict[str, float] | None = None, s: Settings | None = None
) -> dict[str, Any]:
    """Validate quarantined batches again (``batch``: that one; empty: every one, of ``topic`` or of every
    contract topic) with the current suites and ``overrides`` (suite parameters in days). Those that pass
    are released to flow on; those that fail stay. A named batch that is not in quarantine, or that fails
    again, raises (LookupError, ValidationFailed)."""
    from mlplatform.validation.suites import ValidationFailed, redrive

    s = s or get_settings()
    held = [h for h in quarantine(s) if (not topic or h["topic"] == topic) and (not batch or h["batch"] == batch)]
    if batch and not held:
        others = ", ".join(f"{h['topic']}/{h['batch']}" for h in quarantine(s)) or "none"
        raise LookupError(
            f"batch {batch!r} is not in quarantine{f' in {topic}' if topic else ''} (quarantined: {others})"
        )
    released, stayed = [], []
    for h in held:
        try:
            new_batch, report = redrive(landing_root(s), h["topic"], h["batch"], gx_root(s), overrides)
        except ValidationFailed as exc:
            if batch:
                raise
            stayed.append({**h, "reason": str(exc)})
            continue
        released.append(
            {"topic": h["topic"], "batch": new_batch, "from": h["batch"], "rows": report.rows, "docs": report.docs}
        )
    return {"released": released, "stayed": stayed}


def spark_application_args(s: Settings | None = None, full: bool | str = False) -> list[str]:
    """The feature job's arguments. ``full`` recomputes every customer-day; it may be a Jinja template that
    renders to True/False at run time (the DAG passes ``{{ params.full_recompute }}``)."""
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
        f"--full={full}",
    ]


def spark_submit_kwargs(s: Settings | None = None, full: bool | str = False) -> dict[str, Any]:
    """SparkSubmitOperator arguments of the feature job (the master comes from the spark_default connection)."""
    s = s or get_settings()
    return {
        "application": str(s.repo_root / "spark_jobs" / "customer_features.py"),
        "application_args": spark_application_args(s, full),
        "conn_id": "spark_default",
        "name": "mlp-customer-features",
        "conf": {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false"},
    }


@staged("features")
def publish_features(s: Settings | None = None) -> dict[str, Any]:
    """`feast apply` then materialize into the online store."""
    from mlplatform.features import store
    from mlplatform.monitoring import metrics

    s = s or get_settings()
    applied = store.apply(s)
    window = store.materialize(s)
    metrics.materialization_pushed(window.get("written", {}), s)
    return {"applied": applied, **window}


class NoTrainingData(LookupError):
    """Nothing to train on yet (a scheduled retraining on a fresh stack)."""


def lineage(s: Settings | None = None) -> dict[str, Any]:
    """What the features and labels were built from: per contract topic, the validated batches and the
    Kafka offsets they cover (per partition, the span [first, next) of their landed ranges)."""
    from mlplatform.ingest.landing import Landing

    s = s or get_settings()
    out: dict[str, Any] = {}
    for topic in (s.tickets_topic, s.outcomes_topic):
        landing = Landing(landing_root(s), topic)
        docs = landing.batches("validated")
        keys = {k for d in docs for k in d.get("ranges", [])}
        spans: dict[str, list[int]] = {}
        rows = 0
        for r in landing.ranges():
            if r.key in keys:
                a, b = spans.get(str(r.partition), [r.start, r.next])
                spans[str(r.partition)] = [min(a, r.start), max(b, r.next)]
                rows += r.rows
        out[topic] = {
            "batches": len(docs),
            "first_batch": docs[0]["batch"] if docs else None,
            "last_batch": docs[-1]["batch"] if docs else None,
            "rows": rows,
            "partitions": spans,
        }
    return out


def to_artifact_store(local: Path, rel: str, s: Settings) -> str:
    """Copy ``local`` to ``<artifact_root>/<rel>`` through fsspec (to a temporary key, then moved over the
    final one, so a reader never sees half a file; a retry writes the same key) and return its URI."""
    import fsspec

    base = s.artifact_root.rstrip("/")
    fs, root = fsspec.core.url_to_fs(base)
    target = f"{root}/{rel}"
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), target + ".tmp")
    fs.mv(target + ".tmp", target)
    return f"{base}/{rel}"


@staged("snapshot")
def training_snapshot(run_id: str, s: Settings | None = None, holdout_days: int = 0) -> dict[str, Any]:
    """Write the point-in-time training set (labelled tickets joined with Feast features) as Parquet, less
    its latest days: those become the gate's evaluation set (content-addressed, referenced by URI + hash),
    so no model is ever scored on rows it trained on."""
    import pandas as pd

    from mlplatform.features import store
    from mlplatform.ingest.kafka import safe_run_id
    from mlplatform.registry import evaluation

    s = s or get_settings()
    labels_dir = store.labels_path(s)
    files = sorted(labels_dir.glob("*.parquet"))
    if not files:
        raise NoTrainingData(f"no labelled tickets in {labels_dir} yet (build_features writes them)")
    entity_df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    df = store.training_set(entity_df, s)
    train, held, cutoff = evaluation.split(df, days=holdout_days)
    eval_set = evaluation.write_eval_set(held, s.data_dir / "eval_sets", cutoff)
    out = s.data_dir / "snapshots" / safe_run_id(run_id) / "training_set.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    train.to_parquet(tmp, index=False)
    tmp.replace(out)
    uri = out.as_uri()
    if s.artifact_root:  # the training pod reads it from the object store (its node has no such local path)
        uri = to_artifact_store(out, f"snapshots/{safe_run_id(run_id)}/training_set.parquet", s)
    return {
        "uri": uri,
        "path": str(out),
        "rows": len(train),
        "positives": int(train["escalated"].sum()),
        "window": {
            "start": train["event_timestamp"].min().isoformat(),
            "end": train["event_timestamp"].max().isoformat(),
        },
        "eval_set": eval_set.to_dict(),
        "feature_service": s.feature_service,
        "features": store.feature_names(s),
        "lineage": lineage(s),
    }


@staged("train")
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
    result = run_training(s.repo_root / "training" / "configs" / "local_cpu.yaml", overrides, s.repo_root)
    report_training(result, s)
    return result


def report_training(result: dict[str, Any], s: Settings) -> None:
    """Push a finished training run's throughput and GPU utilisation (read back from its MLflow system metrics)."""
    from mlflow.exceptions import MlflowException

    from mlplatform.monitoring import metrics

    gpus: dict[str, float] = {}
    if result.get("run_id"):
        try:
            gpus = metrics.gpu_utilization(s.mlflow_uri, str(result["run_id"]))
        except MlflowException as exc:
            log.warning("GPU utilisation of run %s not read: %s", result["run_id"], exc)
    metrics.training_pushed(float((result.get("throughput") or {}).get("samples_per_s", 0.0)), gpus, s)


FEATURE_SERVICE_TAG = "feast.feature_service"


@staged("register")
def register(
    result: dict[str, Any], snapshot: dict[str, Any], min_delta: float = 0.0, s: Settings | None = None
) -> dict[str, Any]:
    """Register the trained model, judge it against the champion on the snapshot's evaluation set, and
    write its model card. Its version gets a Feast FeatureService of its own (the features it was trained
    on), recorded as the ``feast.feature_service`` tag on the version and the run before the version can
    become challenger. Never moves ``champion``: ``promote_champion`` does, after an approval if required."""
    from mlflow import MlflowClient

    from mlplatform.features.store import version_service
    from mlplatform.registry import card
    from mlplatform.registry.evaluation import EvalSet, GateRules
    from mlplatform.registry.gate import register_and_gate

    s = s or get_settings()
    run_id = result["run_id"]
    if s.profile == "cluster":  # the pod cannot reach the Pushgateway: its result (by XCom) is pushed here
        report_training(result, s)
    eval_set = EvalSet(**snapshot["eval_set"])

    def bind(version: str) -> dict[str, str]:
        service = version_service(s, version, result["feature_columns"], {"mlflow.run_id": run_id})
        return {FEATURE_SERVICE_TAG: service, "data.eval_cutoff": eval_set.start, "data.snapshot_uri": snapshot["uri"]}

    rules = GateRules(min_delta=min_delta)
    decision = register_and_gate(s.mlflow_uri, s.model_name, run_id, result["model_uri"], eval_set, rules, bind)
    out = {**decision.to_dict(), "feature_service": f"{s.feature_service}_v{decision.version}"}
    client = MlflowClient(s.mlflow_uri)
    out["model_card"] = card.attach(client, card.build(out, snapshot, client.get_run(run_id), snapshot["lineage"]))
    return out


def promotion_route(decision: dict[str, Any], require_approval: bool) -> list[str]:
    """Which task follows the gate: ``approve`` (a person decides), ``promote`` (straight on), or none."""
    if not decision["promoted"] or decision["reason"] == "already champion (retry)":
        return []
    return ["approve"] if require_approval else ["promote"]


@staged("promote")
def promote_champion(
    decision: dict[str, Any], approval: dict[str, Any] | None, s: Settings | None = None
) -> dict[str, Any]:
    """Move ``champion`` to the gate's challenger, naming who decided in the audit trail: the approver
    (``approval``: the ApprovalOperator's result) or the gate itself."""
    from mlplatform.registry.gate import promote

    s = s or get_settings()
    if approval is not None:
        user = approval.get("responded_by_user") or {}
        who = f"{user.get('name') or user.get('id') or 'unknown'} (approval)"
        why = f"approved at {approval.get('responded_at', '')}; gate: {decision['reason']}"
    else:
        who, why = "gate (no approval required)", None
    return promote(s.mlflow_uri, decision, who=who, why=why)


@staged("rollback")
def rollback_champion(who: str, why: str, to: str | None = None, s: Settings | None = None) -> dict[str, Any]:
    """``champion`` back to the version before its last promotion (or to ``to``), in the audit trail."""
    from mlflow import MlflowClient

    from mlplatform.registry import audit

    s = s or get_settings()
    return audit.rollback(MlflowClient(s.mlflow_uri), s.model_name, who=who, why=why, to=to)


@staged("deploy")
def deploy(s: Settings | None = None, swap_timeout_s: float = 300, smoke: bool = True) -> dict[str, Any]:
    """Serve models:/<name>@champion: the server swaps to the champion's version in place (started first if
    it is not running), then one real request. A version the server refuses is rolled back and fails this."""
    from mlplatform.serving.deploy import rollout

    return rollout(s or get_settings(), swap_timeout_s=swap_timeout_s, smoke=smoke)


class NoChampionError(LookupError):
    """There is no champion to score with yet."""


def scores_dir(s: Settings) -> Path:
    return s.data_dir / "scores" / s.model_name


@staged("score")
def batch_score(day: str = "", s: Settings | None = None) -> dict[str, Any]:
    """Score the validated tickets of one event date (``day``, YYYY-MM-DD; default yesterday, UTC) through the
    champion, each with its point-in-time features (as of the ticket's creation), into
    ``<data>/scores/<model>/date=<day>/scores.parquet``. The champion's version is pinned for the whole batch
    and written with every row; a retry writes the same file again (atomic replace)."""
    from datetime import UTC, date, datetime, timedelta

    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlplatform.features import store
    from mlplatform.ingest.landing import Landing
    from mlplatform.registry.evaluation import model_input
    from mlplatform.validation.suites import read_files

    s = s or get_settings()
    the_day = date.fromisoformat(day) if day else (datetime.now(UTC) - timedelta(days=1)).date()
    client = MlflowClient(s.mlflow_uri)
    try:
        champ = client.get_model_version_by_alias(s.model_name, "champion")
    except MlflowException as exc:
        raise NoChampionError(f"{s.model_name} has no champion to score with yet") from exc
    version = str(champ.version)
    tickets = read_files(Landing(landing_root(s), s.tickets_topic).validated_files())
    out_dir = scores_dir(s) / f"date={the_day.isoformat()}"
    result = {"date": the_day.isoformat(), "model_version": version, "uri": (out_dir / "scores.parquet").as_uri()}
    if not tickets.empty:
        created = pd.to_datetime(tickets["created_at"], utc=True)
        tickets = tickets[created.dt.date == the_day].drop_duplicates("ticket_id").reset_index(drop=True)
    if tickets.empty:
        return {**result, "rows": 0, "escalate": 0, "missing_features": 0, "uri": ""}
    entity = pd.DataFrame(
        {
            "ticket_id": tickets["ticket_id"],
            "customer_id": tickets["customer_id"],
            "event_timestamp": pd.to_datetime(tickets["created_at"], utc=True),
            "subject": tickets["subject"],
            "body": tickets["body"],
        }
    )
    service = champ.tags.get(FEATURE_SERVICE_TAG) or s.feature_service
    frame = store.training_set(entity, s, service=service)
    names = store.feature_names(s, service=service)
    mlflow.set_tracking_uri(s.mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{s.model_name}/{version}")
    probs = model.predict(model_input(frame))["escalation_probability"]
    scored = pd.DataFrame(
        {
            "ticket_id": frame["ticket_id"],
            "customer_id": frame["customer_id"],
            "created_at": frame["event_timestamp"],
            "escalation_probability": probs.to_numpy(dtype="float64"),
            "model_version": version,
            "scored_at": datetime.now(UTC).isoformat(),
        }
    )
    scored["escalate"] = scored["escalation_probability"] >= 0.5
    bad = int((~scored["escalation_probability"].between(0, 1)).sum())
    if bad:
        raise ValueError(f"version {version} returned {bad} scores that are NaN or outside [0, 1]: nothing written")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".scores.{datetime.now(UTC).timestamp():.6f}.tmp"
    scored.to_parquet(tmp, index=False)
    tmp.replace(out_dir / "scores.parquet")
    return {
        **result,
        "rows": len(scored),
        "escalate": int(scored["escalate"].sum()),
        "missing_features": int(frame[names].isna().any(axis=1).sum()),
    }
