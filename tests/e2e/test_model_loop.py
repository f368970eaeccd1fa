"""The model loop through the real scheduler: a promotion waits for a reviewer who answers through the REST API
(approve one, reject another), the approved champion is deployed by deploy_model, and drift measured on what the
server saw emits the drift Asset, which starts a retraining run."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlplatform.registry import audit
from mlplatform.serving.deploy import prediction_log_dir
from mlplatform.stack.airflow_api import AirflowClient

pytestmark = pytest.mark.e2e
FAST = {"max_steps": 4, "epochs": 1}


@pytest.fixture(scope="module")
def client(stack, settings):
    c = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    c.wait_for_dag("train_model")
    return c


def champion(mlflow: MlflowClient, name: str) -> str | None:
    try:
        return str(mlflow.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None


@pytest.fixture(scope="module")
def served(client, settings):
    """A champion the server serves: the one there is, or one made by a small ml_pipeline run."""
    mlflow = MlflowClient(settings.mlflow_uri)
    if champion(mlflow, settings.model_name) is None:
        run_id = client.trigger("ml_pipeline", {"events": 300, "seed": 4242, **FAST, "batch_size": 16})
        assert client.wait_for_run("ml_pipeline", run_id, timeout=1500) == "success"
    version = champion(mlflow, settings.model_name)
    assert version is not None
    return version


def wait_for(what: Any, timeout: float, every: float = 3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s: {what.__doc__}")


def runs_since(client: AirflowClient, dag_id: str, since: datetime, run_type: str | None = None) -> list[dict]:
    runs = client.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 50})
    return [
        r
        for r in runs["dag_runs"]
        if datetime.fromisoformat(r["run_after"]) >= since and (run_type is None or r["run_type"] == run_type)
    ]


def hitl(client: AirflowClient, dag_id: str, run_id: str, task_id: str = "approve") -> str:
    return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"


def _try_number(client: AirflowClient, run_id: str, task_id: str = "approve") -> int:
    ti = client.request("GET", f"/dags/train_model/dagRuns/{run_id}/taskInstances/{task_id}")
    return int(ti["try_number"])


@pytest.mark.timeout(2400)
def test_a_reviewer_approves_one_promotion_and_rejects_another_through_the_rest_api(client, settings, served):
    mlflow = MlflowClient(settings.mlflow_uri)
    name = settings.model_name
    before = champion(mlflow, name)
    # precondition: no champion, so both gates say promote and both runs wait for the reviewer
    mlflow.delete_registered_model_alias(name, "champion")
    since = datetime.now(UTC)
    try:
        rejected = client.trigger("train_model", {**FAST, "require_approval": True})
        approved = client.trigger("train_model", {**FAST, "require_approval": True})
        answers = {rejected: "Reject", approved: "Approve"}
        decision: dict = {}

        def answer_each_request_as_it_appears() -> bool:
            """both reviewers answered, each in the second its request appeared: before the scheduler has read
            the parked worker's exit, where Airflow 3.3.2's own LocalExecutor lost the answer and retried the
            task. The approval waits for the other run's request: a champion promoted earlier would change
            that run's gate."""
            for run_id, option in list(answers.items()):
                states = client.task_states("train_model", run_id)
                assert "failed" not in states.values(), states
                if states.get("approve") != "awaiting_input":  # parked, awaiting input: no worker slot held
                    continue
                if run_id == approved and rejected in answers:
                    continue
                if run_id == approved:
                    decision.update(client.xcom("train_model", approved, "register"))
                    detail = client.request("GET", hitl(client, "train_model", approved))
                    assert detail["options"] == ["Approve", "Reject"]
                    assert f"v{decision['version']} to champion" in detail["subject"]
                    assert decision["eval_set"]["sha256"] in detail["body"]
                    assert champion(mlflow, name) is None  # nothing moves before the reviewer answers
                answer = client.request(
                    "PATCH", hitl(client, "train_model", run_id), json={"chosen_options": [option], "params_input": {}}
                )
                assert answer["chosen_options"] == [option]
                assert answer["responded_by"]["name"] == settings.airflow_admin
                del answers[run_id]
            return not answers

        wait_for(answer_each_request_as_it_appears, timeout=1500, every=0.5)
        assert decision["promoted"] is True
        with pytest.raises(Exception, match="409|already"):  # an answered request cannot be answered again
            client.request("PATCH", hitl(client, "train_model", approved), json={"chosen_options": ["Reject"]})

        assert client.wait_for_run("train_model", approved, timeout=600) == "success"
        assert client.wait_for_run("train_model", rejected, timeout=600) == "success"
        # each answer was the one its run resumed with: asked once, never retried
        assert _try_number(client, approved) == _try_number(client, rejected) == 1
        assert client.task_states("train_model", approved)["promote"] == "success"
        assert client.task_states("train_model", rejected)["promote"] == "skipped"
        assert champion(mlflow, name) == decision["version"]
        last = audit.history(mlflow, name)[-1]
        assert (last["to"], last["who"], last["kind"]) == (decision["version"], "admin (approval)", "promote")
        assert "approved at" in last["why"]

        # the promotion's champion Asset runs deploy_model: the server swaps to the approved version
        deployed = wait_for(
            lambda: [r for r in runs_since(client, "deploy_model", since) if r["state"] == "success"], 600
        )
        assert deployed
        health = httpx.get(f"{settings.serving_url}/health", timeout=10).json()
        assert health["serving"]["version"] == decision["version"]
    finally:
        if champion(mlflow, name) is None and before is not None:  # leave a champion, as found
            audit.move(mlflow, name, before, who="test", why="restore after a rejected promotion")


@pytest.mark.timeout(2400)
def test_drift_on_what_the_server_sees_fires_the_drift_asset_and_starts_retraining(client, settings, served):
    mlflow = MlflowClient(settings.mlflow_uri)
    version = champion(mlflow, settings.model_name)
    since = datetime.now(UTC)
    # a shifted world: every ticket is an outage report
    with httpx.Client(timeout=60) as http:
        for i in range(300):
            body = {"customer_id": f"C{i % 10:06d}", "subject": "Production outage", "body": "Everything is down!"}
            assert http.post(f"{settings.serving_url}/predict", json=body).status_code == 200

    def logged() -> int:
        """the server flushed the requests to its prediction log"""
        import pandas as pd

        files = list(prediction_log_dir(settings).glob("date=*/*.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame({"model_version": []})
        return int((frame["model_version"].astype(str) == version).sum()) >= 300

    wait_for(logged, timeout=60, every=1)
    run_id = client.trigger("monitor_drift", {"window_hours": 1, "min_rows": 100})
    assert client.wait_for_run("monitor_drift", run_id, timeout=600) == "success"
    report = client.xcom("monitor_drift", run_id, "measure")
    assert report["version"] == version
    assert report["rows"] >= 300
    assert "score" in report["psi"]  # the score is compared with the champion's own on its evaluation set
    assert report["drifted"], report  # ten customers' features, every ticket an outage: a shifted world
    assert client.task_states("monitor_drift", run_id)["signal"] == "success"
    events = client.request("GET", "/assets/events", params={"order_by": "-timestamp", "limit": 20})
    drift = [e for e in events["asset_events"] if e["uri"].endswith("/drift") and e["source_run_id"] == run_id]
    assert drift, events
    assert drift[0]["extra"]["drifted"] == report["drifted"]
    # the drift Asset schedules train_model: a retraining run starts, and goes through the gate
    retrain = wait_for(lambda: runs_since(client, "train_model", since, "asset_triggered"), timeout=300)
    for r in retrain:
        assert client.wait_for_run("train_model", r["dag_run_id"], timeout=1500) == "success"
    gate = client.xcom("train_model", retrain[0]["dag_run_id"], "register")
    assert gate["champion_version"] == version
    assert gate["reason"]
    # leave the hourly monitor nothing to judge: it would retrain again in the middle of later tests
    shutil.rmtree(prediction_log_dir(settings), ignore_errors=True)
