"""The whole chain through a real Airflow scheduler (LocalExecutor), Kafka to a served prediction."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlplatform.config.settings import Settings
from mlplatform.features import store
from mlplatform.ingest.watch import ingestion_lag
from mlplatform.pipeline import stages
from mlplatform.registry import audit
from mlplatform.stack.airflow_api import AirflowClient
from mlplatform.stack.services import BIN, airflow_env
from mlplatform.validation.docs import http_url

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack, settings):
    c = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    c.wait_for_dag("ml_pipeline")
    assert c.import_errors() == []
    return c


def _champion(mlflow: MlflowClient, name: str) -> ModelVersion | None:
    """The model version holding alias ``champion``, or None (no such alias, or no registered model yet)."""
    try:
        return mlflow.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None


# The run alone may take 1500 s (its own wait below), on top of starting the stack: above the global 900 s.
@pytest.mark.timeout(2700)
def test_ml_pipeline_runs_kafka_to_served_prediction(client, settings):
    mlflow = MlflowClient(settings.mlflow_uri)
    before = _champion(mlflow, settings.model_name)
    seed = uuid.uuid4().int % 9000
    # schema_version 2: the evolved contract, after v1 events landed by earlier tests: both flow to a model
    conf = {"events": 400, "seed": seed, "max_steps": 6, "batch_size": 16, "schema_version": 2}
    run_id = client.trigger("ml_pipeline", conf)
    state = client.wait_for_run("ml_pipeline", run_id, timeout=1500)
    states = client.task_states("ml_pipeline", run_id)
    assert state == "success", states
    decision = client.xcom("ml_pipeline", run_id, "register")
    # approve is never needed here (require_approval is off on the local profile); promote runs iff the gate says so
    expected = {"approve": "skipped", "promote": "success" if decision["promoted"] else "skipped"}
    assert {k: v for k, v in states.items() if k in expected} == expected, states
    assert {v for k, v in states.items() if k not in expected} == {"success"}, states

    produced = client.xcom("ml_pipeline", run_id, "produce")
    assert (produced["tickets"], produced["outcomes"]) == (400, 400), produced
    snapshot = client.xcom("ml_pipeline", run_id, "training_snapshot")
    assert snapshot["rows"] + snapshot["eval_set"]["rows"] >= 400
    assert str(mlflow.get_model_version_by_alias(settings.model_name, "challenger").version) == decision["version"]
    champion = str(mlflow.get_model_version_by_alias(settings.model_name, "champion").version)
    # the gate's decision carries its evidence: both models scored on the snapshot's evaluation set, a reason
    assert decision["metric"] == "roc_auc"
    assert decision["eval_set"] == snapshot["eval_set"]
    assert isinstance(decision["candidate"], float)
    assert decision["reason"]
    if before is None:
        assert decision["promoted"] is True, decision
        assert decision["reason"] == "no champion yet", decision
        assert decision["champion_version"] is None, decision
        assert champion == decision["version"]
    else:
        assert decision["champion_version"] == str(before.version), decision
        assert decision["champion_scores"]["rows"] == decision["scores"]["rows"] == snapshot["eval_set"]["rows"]
        if decision["promoted"]:
            assert champion == decision["version"], decision
            assert decision["candidate"] > decision["champion"], decision
        else:  # the gate keeps the champion when the candidate loses on the same rows or breaks a guardrail
            assert champion == str(before.version), decision
            assert decision["failed_checks"], decision
    if decision["promoted"]:
        last = audit.history(mlflow, settings.model_name)[-1]
        assert (last["to"], last["who"], last["applied"]) == (decision["version"], "gate (no approval required)", True)
    version = mlflow.get_model_version(settings.model_name, decision["version"])
    run = mlflow.get_run(version.run_id)
    assert run.data.tags["dataset_uri"] == snapshot["uri"]
    # the version's own Feast service, on the version and its run, holding the features it was trained on
    service = f"{settings.feature_service}_v{decision['version']}"
    assert decision["feature_service"] == service
    assert version.tags["feast.feature_service"] == run.data.tags["feast.feature_service"] == service
    frozen = store.get_store(settings).get_feature_service(service)
    assert [f.name for p in frozen.feature_view_projections for f in p.features] == snapshot["features"]

    deployed = client.xcom("ml_pipeline", run_id, "deploy")
    assert 0.0 <= deployed["smoke_test"]["escalation_probability"] <= 1.0
    served = mlflow.get_model_version_by_alias(settings.model_name, "champion")
    assert deployed["version"] == str(served.version)
    health = httpx.get(f"{settings.serving_url}/health", timeout=10).json()
    assert health["run_id"] == served.run_id
    assert health["serving"]["version"] == str(served.version)
    assert health["feature_service"] == f"{settings.feature_service}_v{served.version}"  # the champion's service
    answer = httpx.post(
        f"{settings.serving_url}/predict",
        timeout=30,
        json={
            "customer_id": deployed["smoke_test"]["customer_id"],
            "subject": "Production outage",
            "body": "Everything is down, we lose money every minute.",
        },
    ).json()
    assert 0.0 <= answer["escalation_probability"] <= 1.0
    assert answer["model_uri"] == f"models:/{settings.model_name}@champion"
    assert answer["features"]["tickets_30d"] is not None
    # a customer the feature store has never seen: the server counts the lookups that found nothing
    unknown = {"customer_id": f"C-unknown-{seed}", "subject": "Hello", "body": "Just a question."}
    assert httpx.post(f"{settings.serving_url}/predict", timeout=30, json=unknown).status_code in (200, 503)
    assert_every_stage_is_live_in_prometheus(settings)
    assert_task_logs_carry_their_context(settings, run_id)


def _task_log(settings, run_id: str, task_id: str) -> list[dict]:
    """The task's log as Airflow wrote it (one JSON object per line), latest attempt."""
    folder = settings.home / "airflow" / "logs" / "dag_id=ml_pipeline" / f"run_id={run_id}" / f"task_id={task_id}"
    attempt = max(folder.glob("attempt=*.log"), key=lambda p: int(p.stem.split("=")[1]))
    return [json.loads(line) for line in attempt.read_text().splitlines() if line.strip()]


def assert_task_logs_carry_their_context(settings, run_id: str) -> None:
    """Library lines in real task logs say which DAG, run, task, team and stage they belong to; the training
    program's own lines (relayed into the train task's log) are JSON that say the same."""
    context = {"dag_id": "ml_pipeline", "run_id": run_id, "team": "support-ml"}
    for task_id, stage in [(f"ingest_{settings.tickets_topic.replace('.', '_')}", "ingest"), ("train", "train")]:
        log = _task_log(settings, run_id, task_id)
        ours = [line for line in log if line.get("logger", "").startswith("mlplatform")]
        assert ours, task_id
        for line in ours:
            assert {k: line.get(k) for k in context} == context, line
            assert (line.get("task_id"), line.get("stage")) == (task_id, stage), line
    relayed = [line["event"][len("[train] ") :] for line in _task_log(settings, run_id, "train")]
    inner = [json.loads(text) for text in relayed if text.startswith("{")]
    assert inner, "the training program wrote no JSON lines"
    for line in inner:
        assert (line["dag_id"], line["run_id"], line["task_id"]) == ("ml_pipeline", run_id, "train"), line
        assert (line["stage"], line["component"], line["team"]) == ("train", "training", "support-ml"), line


def _series(settings, promql: str) -> dict[str, float]:
    from mlplatform.monitoring.metrics import query

    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in query(settings, promql)}


def live_series(settings) -> dict[str, str]:
    """PromQL of every series a platform team watches, each of which must be there and non-zero after a run."""
    t, o = settings.tickets_topic, settings.outcomes_topic
    return {
        # the project's own, pushed by this run's tasks (grouped by stage, DAG and topic)
        "landed": f'mlp_ingest_landed_records{{dag_id="ml_pipeline",topic="{t}"}}',
        "lag reported": f'count(mlp_ingest_lag_records{{dag_id="ml_pipeline",topic="{o}"}})',  # 0 once caught up
        "dlq by reason": 'count(mlp_ingest_dead_lettered_records{dag_id="ml_pipeline"})',
        "validation passed": f'mlp_validation_passed{{dag_id="ml_pipeline",topic="{t}"}}',
        "validated rows": f'mlp_validation_rows{{dag_id="ml_pipeline",topic="{o}"}}',
        "materialized rows": 'sum(mlp_feast_materialized_rows{dag_id="ml_pipeline"})',
        "training samples/s": 'mlp_training_samples_per_second{dag_id="ml_pipeline"}',
        # Airflow's, over StatsD: pool occupancy during the run, queue depth series per pool
        "a pool was occupied": "max(max_over_time(airflow_pool_running_slots[1h]))",
        "pool sizes": 'airflow_pool_open_slots{pool_name="cpu_train"}',
        "queued slots per pool": "count(airflow_pool_queued_slots) > 0",
        "scheduler heartbeat": "sum(airflow_scheduler_heartbeat)",
        # the model server's, scraped from its /metrics
        "served requests": 'sum(mlp_serving_requests_total{code="200"})',
        "latency observed": "mlp_serving_request_seconds_count",
        "batch sizes": "mlp_serving_batch_size_count",
        "missing features": "sum(mlp_serving_missing_features_total)",
    }


def assert_every_stage_is_live_in_prometheus(settings) -> None:
    deadline, missing = time.monotonic() + 90, {}
    while time.monotonic() < deadline:  # Prometheus scrapes every 5 s; the last pushes may be a scrape away
        missing = {name: q for name, q in live_series(settings).items() if not any(_series(settings, q).values())}
        if not missing:
            break
        time.sleep(5)
    assert not missing, f"no live non-zero series in Prometheus for: {missing}"
    _assert_dashboards_query_live_metrics(settings)


def _assert_dashboards_query_live_metrics(settings) -> None:
    """Every panel of every dashboard in docker/grafana/dashboards queries only metrics Prometheus holds."""
    import re

    from mlplatform.gpu.inventory import local_gpus
    from mlplatform.monitoring.metrics import names

    known = set(names(settings))
    # a series that only a GPU can produce: absent on a CPU machine (CI), present on a GPU one
    needs_gpu = set() if local_gpus() else {"mlp_training_gpu_utilization_percent"}
    root = settings.repo_root / "docker" / "grafana" / "dashboards"
    boards = sorted(root.glob("*.json"))
    assert {p.stem for p in boards} >= {"pipeline", "gpu_quota", "serving"}
    for path in boards:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                words = set(re.findall(r"\b(?:mlp|airflow)_[a-z0-9_]+", expr))
                assert words, (path.name, panel["title"], expr)
                for word in words - needs_gpu:
                    base = re.sub(r"_(bucket|count|sum)$", "", word)
                    assert word in known or base in known, (path.name, panel["title"], word)


def test_cli_trigger_with_bad_conf_is_rejected_naming_the_field(client, settings):
    env = airflow_env(settings)
    out = subprocess.run(
        [str(BIN / "airflow"), "dags", "trigger", "ml_pipeline", "--conf", json.dumps({"events": "lots"})],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=180,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "events" in text


def test_unknown_conf_field_fails_the_run_at_check_conf(client):
    run_id = client.trigger("ml_pipeline", {"evnts": 10})
    assert client.wait_for_run("ml_pipeline", run_id, timeout=600) == "failed"
    states = client.task_states("ml_pipeline", run_id)
    assert states["check_conf"] == "failed"
    assert states["produce"] == "upstream_failed"
    assert states["deploy"] == "upstream_failed"


def test_feature_lookup_notebook_runs_in_a_real_kernel(client):
    """After a pipeline run the features are in Feast; the shipped notebook must run top to bottom."""
    import nbformat
    from nbclient import NotebookClient

    from mlplatform.config.settings import REPO_ROOT

    nb = nbformat.read(REPO_ROOT / "notebooks" / "feature_lookup.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("point-in-time correct for 9 rows" in o.get("text", "") for o in outputs)
    assert any("feature service: escalation_features" in o.get("text", "") for o in outputs)
    assert any("features for 3 customers" in o.get("text", "") for o in outputs)


def test_mlp_airflow_passthrough_rejects_bad_conf_naming_the_field(client):
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlplatform.cli",
            "airflow",
            "dags",
            "trigger",
            "ml_pipeline",
            "--conf",
            json.dumps({"batch_size": -3}),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert out.returncode != 0
    assert "batch_size" in out.stdout + out.stderr


def _asset_triggered_runs(client: AirflowClient, since: datetime, dag_id: str = "ingest_events") -> list[dict]:
    runs = client.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 50})
    return [
        r
        for r in runs["dag_runs"]
        if r["run_type"] == "asset_triggered" and datetime.fromisoformat(r["run_after"]) >= since
    ]


def _data_docs_links(client: AirflowClient, dag_id: str, task_id: str, since: datetime) -> list[str]:
    """The "Data Docs" extra links of every instance of ``task_id`` in ``dag_id`` that started after ``since``
    (its run may have been created before: an asset event just earlier can start the run that finds the data)."""
    links = []
    for run in client.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 50})[
        "dag_runs"
    ]:
        if run.get("end_date") and datetime.fromisoformat(run["end_date"]) < since:
            continue  # it ended before: none of its tasks started after
        tis = client.request("GET", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances", params={"limit": 100})
        for ti in tis["task_instances"]:
            started = ti.get("start_date")
            if ti["task_id"] == task_id and started and datetime.fromisoformat(started) >= since:
                path = f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/links"
                got = client.request("GET", path, params={"map_index": ti["map_index"]})["extra_links"]
                links.extend(v for k, v in got.items() if k == "Data Docs" and v)
    return links


@pytest.mark.timeout(900)
def test_new_events_wake_ingest_events_through_the_kafka_watcher(client, settings):
    """No trigger and no schedule: events on the topics alone start ingest_events (AssetWatcher on Kafka),
    which lands them, so the ingestion group ends with no lag."""
    kafka = {"bootstrap.servers": settings.kafka_bootstrap}
    since = datetime.now(UTC)
    produced = stages.produce_events(events=120, seed=uuid.uuid4().int % 9000)
    assert (produced["tickets"], produced["outcomes"]) == (120, 120), produced
    deadline = time.monotonic() + 600
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = _asset_triggered_runs(client, since)
        lag = {
            t: ingestion_lag(kafka, t, settings.consumer_group)
            for t in (settings.tickets_topic, settings.outcomes_topic)
        }
        if runs and all(r["state"] in ("success", "failed") for r in runs) and not any(lag.values()):
            break
        time.sleep(3)
    assert runs, "no asset-triggered ingest_events run after producing"
    assert {r["state"] for r in runs} == {"success"}, runs
    assert not any(lag.values()), lag


def _wait_until_every_ticket_is_validated(client: AirflowClient, settings: Settings, timeout: float = 600) -> None:
    """Until the tickets an earlier test produced are landed and claimed by a batch, with no run of the chain
    active: a batch takes every landed range no batch has claimed, so a test that needs a batch of its own
    events alone waits for this first."""
    from mlplatform.ingest.landing import Landing

    kafka = {"bootstrap.servers": settings.kafka_bootstrap}
    landing = Landing(stages.landing_root(settings), settings.tickets_topic)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = [
            r
            for dag_id in ("ingest_events", "validate_landing")
            for r in client.request(
                "GET", f"/dags/{dag_id}/dagRuns", params={"state": ["queued", "running"], "limit": 10}
            )["dag_runs"]
        ]
        lag = ingestion_lag(kafka, settings.tickets_topic, settings.consumer_group)
        if not active and not lag and not landing.unvalidated():
            return
        if not active and not lag:  # landed, and nothing will claim it by itself
            client.trigger("validate_landing", conf={"topics": [settings.tickets_topic]})
        time.sleep(5)
    raise AssertionError(f"the chain did not settle within {timeout} s: {len(landing.unvalidated())} ranges unclaimed")


@pytest.mark.timeout(1500)
def test_a_stale_backfill_is_quarantined_and_flows_on_after_a_redrive(client, settings):
    """validate_landing quarantines a batch its suite refuses (a backfill of events ten weeks old is stale):
    the chain stops and no feature of those days exists. `mlp redrive` (through redrive_batch) with the bound
    the backfill needs releases it, and the build_features run it wakes builds those days."""
    import pandas as pd

    from mlplatform.features import store

    cutoff = pd.Timestamp(datetime.now(UTC)) - pd.Timedelta(days=60)

    def old_feature_rows() -> list[tuple]:
        """The feature rows older than the freshness bound (an earlier run on a kept stack may have some)."""
        path = store.features_path(settings)
        if not path.exists():
            return []
        df = pd.read_parquet(path)
        return sorted(df[df.event_timestamp < cutoff].astype(str).itertuples(index=False, name=None))  # NaN-safe

    _wait_until_every_ticket_is_validated(client, settings)  # the backfill must be a batch of its own
    before = old_feature_rows()
    since = datetime.now(UTC)
    produced = stages.produce_events(events=200, seed=uuid.uuid4().int % 9000, days_back=70)
    assert produced["tickets"] == 200, produced
    held: list[dict] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not held:
        time.sleep(3)
        held = [
            h
            for h in stages.quarantine(settings)
            if h["topic"] == settings.tickets_topic and h["at"] >= since.isoformat()
        ]
    assert held, "the stale backfill was not quarantined"
    assert any(f.startswith("expect_column_max_to_be_between") for f in held[0]["failed"]), held
    assert held[0]["docs"].startswith("file://")
    # the failed validate task carries a "Data Docs" link to that page, served over HTTP by the API server
    page = http_url(held[0]["docs"], stages.gx_root(settings), settings)
    assert page.startswith(f"{settings.airflow_url}/data-docs/validations/"), page
    assert page in _data_docs_links(client, "validate_landing", "validate", since), page
    html = httpx.get(page, timeout=30)
    assert html.status_code == 200
    assert "text/html" in html.headers["content-type"]
    assert "ticket_id" in html.text  # the rendered expectations of the tickets suite
    assert httpx.get(f"{settings.airflow_url}/data-docs/index.html", timeout=30).status_code == 200
    assert old_feature_rows() == before  # nothing of the quarantined batch reached the features

    redriven_at = datetime.now(UTC)
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "redrive", held[0]["batch"], "--set", "stale_before=150"],
        capture_output=True,
        text=True,
        check=False,
        timeout=700,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    released = json.loads(out.stdout.strip().splitlines()[-1])["released"]
    assert [(r["from"], r["rows"]) for r in released] == [(held[0]["batch"], 200)], released
    assert held[0]["batch"] not in [h["batch"] for h in stages.quarantine(settings)]
    runs: list[dict] = []
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = _asset_triggered_runs(client, redriven_at, "build_features")
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    assert runs, "the re-drive woke no build_features run"
    assert {r["state"] for r in runs} == {"success"}, runs
    after = old_feature_rows()
    assert len(after) > 0, "the backfill's days are not in the features"
    assert after != before  # the backfill's tickets changed (or created) those days' rows
