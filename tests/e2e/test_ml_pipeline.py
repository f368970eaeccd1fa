"""The whole chain through a real Airflow scheduler (LocalExecutor), Kafka to a served prediction."""

from __future__ import annotations

import json
import subprocess
import uuid

import httpx
import pytest
from mlflow import MlflowClient

from mlplatform.stack.airflow_api import AirflowClient
from mlplatform.stack.services import BIN, airflow_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack, settings):
    c = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    c.wait_for_dag("ml_pipeline")
    assert c.import_errors() == []
    return c


def test_ml_pipeline_runs_kafka_to_served_prediction(client, settings):
    seed = uuid.uuid4().int % 9000
    run_id = client.trigger("ml_pipeline", {"events": 400, "seed": seed, "max_steps": 6, "batch_size": 16})
    state = client.wait_for_run("ml_pipeline", run_id, timeout=1500)
    states = client.task_states("ml_pipeline", run_id)
    assert state == "success", states
    assert set(states.values()) == {"success"}

    produced = client.xcom("ml_pipeline", run_id, "produce")
    assert produced == {"tickets": 400, "outcomes": 400}
    snapshot = client.xcom("ml_pipeline", run_id, "training_snapshot")
    assert snapshot["rows"] >= 400
    decision = client.xcom("ml_pipeline", run_id, "register")
    mlflow = MlflowClient(settings.mlflow_uri)
    champion = mlflow.get_model_version_by_alias(settings.model_name, "champion")
    assert mlflow.get_model_version_by_alias(settings.model_name, "challenger").version == decision["version"]
    if decision["promoted"]:
        assert champion.version == decision["version"]
    run = mlflow.get_run(mlflow.get_model_version(settings.model_name, decision["version"]).run_id)
    assert run.data.tags["dataset_uri"] == snapshot["uri"]

    deployed = client.xcom("ml_pipeline", run_id, "deploy")
    assert 0.0 <= deployed["smoke_test"]["escalation_probability"] <= 1.0
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
