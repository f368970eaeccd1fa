"""The model server as a real process on loopback, following a real MLflow alias and looking features up in a real
Feast project (PostgreSQL registry, Redis), under a bounded load of concurrent clients: a good swap and bad
versions (NaN, out-of-range, raising, unloadable) with zero 5xx, the deploy's automatic rollback, the missing
feature policy, bad input, and the prediction log."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlplatform.features import store
from mlplatform.registry import audit
from mlplatform.serving import deploy
from mlplatform.stack import process

MODEL_CODE = Path(__file__).parent / "models" / "ticket_rule.py"
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
CUSTOMERS = [f"C{i:06d}" for i in range(60)]
FEATURES = ["tickets_7d", "tickets_30d", "high_priority_share_30d", "avg_body_len_30d", "is_enterprise"]
REQUEST = {"customer_id": "C000007", "subject": "Outage", "body": "Our production system is down."}


@pytest.fixture(scope="module")
def world(settings, stack, tmp_path_factory):
    """A Feast project with features for CUSTOMERS, a registered model name of its own, and settings for a
    model server of this module (own state dir, port and prediction log)."""
    home = tmp_path_factory.mktemp("serving-home")
    features = home / "customer_daily"
    features.mkdir()
    s = settings.model_copy(
        update={
            "feast_project": f"t_{uuid.uuid4().hex[:12]}",
            "model_name": f"it_serve_{uuid.uuid4().hex[:6]}",
            "home": home,
            "serving_port": process.free_port(),
            "postgres_password": settings.pg_password(),
        }
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("MLP_FEATURES_URI", str(features))
    table = pd.DataFrame(
        {
            "customer_id": CUSTOMERS,
            "event_timestamp": [DAY] * len(CUSTOMERS),
            "tickets_7d": [i % 7 for i in range(len(CUSTOMERS))],
            "tickets_30d": [i % 30 for i in range(len(CUSTOMERS))],
            "high_priority_share_30d": [0.5] * len(CUSTOMERS),
            "avg_body_len_30d": [120.0] * len(CUSTOMERS),
            "is_enterprise": [i % 2 for i in range(len(CUSTOMERS))],
        }
    )
    table.to_parquet(features / "part-0.parquet", index=False)
    store.apply(s)
    store.materialize(s, end=DAY + timedelta(days=2), days=10)
    mlflow.set_tracking_uri(s.mlflow_uri)
    mlflow.set_experiment("it-serving")
    yield s
    deploy.stop_server(s)
    store.drop_project(s)
    mp.undo()


def register(s, kind: str) -> str:
    """Log the rule model of ``kind`` and register it under the module's name; returns the version."""
    with mlflow.start_run(run_name=kind):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), model_config={"kind": kind})
        mlflow.set_tag("feast.feature_service", s.feature_service)
    return str(mlflow.register_model(info.model_uri, s.model_name).version)


def health(s) -> dict:
    return httpx.get(f"{s.serving_url}/health", timeout=10).json()


def until(what, timeout: float = 120, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got is not None and got is not False:  # a DataFrame has no truth value; None/False mean "not yet"
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what.__doc__ or what}")


@pytest.fixture(scope="module")
def server(world):
    """The model server on models:/<name>@champion, polling the alias twice a second; v1 (good) serving."""
    s = world
    v1 = register(s, "good")
    MlflowClient(s.mlflow_uri).set_registered_model_alias(s.model_name, "champion", v1)
    deploy.start_server(s)
    until(lambda: (health(s).get("serving") or {}).get("version") == v1)
    return s


def serve_version(s, version: str) -> None:
    """Point champion at ``version`` and wait until the server serves it."""
    MlflowClient(s.mlflow_uri).set_registered_model_alias(s.model_name, "champion", version)
    until(lambda: (health(s).get("serving") or {}).get("version") == version)


class Load:
    """``clients`` threads posting predictions back to back until stopped; every answer is kept."""

    def __init__(self, s, clients: int = 8) -> None:
        self.url, self.stop = f"{s.serving_url}/predict", threading.Event()
        self.answers: list[tuple[int, str | None]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def run(self, i: int) -> None:
        with httpx.Client(timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                body = {**REQUEST, "customer_id": CUSTOMERS[(i * 7 + n) % len(CUSTOMERS)]}
                n += 1
                try:
                    r = http.post(self.url, json=body)
                    answer = (r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(repr(exc))
                    continue
                with self.lock:
                    self.answers.append(answer)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        until(lambda: len(self.answers) >= 20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def codes(self) -> Counter:
        return Counter(code for code, _ in self.answers)


def test_a_good_swap_under_load_drops_no_request(server):
    s = server
    client = MlflowClient(s.mlflow_uri)
    old = register(s, "good")
    serve_version(s, old)
    new = register(s, "good_v2")
    with Load(s) as load:
        client.set_registered_model_alias(s.model_name, "champion", new)
        until(lambda: any(v == new for _, v in load.answers[-20:]))
        seen = len(load.answers)
        until(lambda: len(load.answers) >= seen + 100)
    assert load.errors == []
    assert set(load.codes()) == {200}, load.codes()
    versions = [v for _, v in load.answers]
    first_new = versions.index(new)
    assert versions[:first_new].count(old) == first_new  # the old version until the swap...
    assert set(versions[first_new + 8 :]) == {new}  # ...then the new one only (8: requests in flight at the swap)
    assert health(s)["status"] == "ok"


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("nan", "NaN or outside [0, 1]"),
        ("out_of_range", "NaN or outside [0, 1]"),
        ("raises", "raised on its smoke-test rows: ValueError"),
        ("unloadable", "failed to load"),
    ],
)
def test_a_bad_version_is_refused_and_the_old_one_keeps_serving_under_load(server, kind, says):
    s = server
    good = register(s, "good")
    serve_version(s, good)
    bad = register(s, kind)
    with Load(s) as load:
        MlflowClient(s.mlflow_uri).set_registered_model_alias(s.model_name, "champion", bad)
        refused = until(lambda: health(s)["refused"].get(bad))
        seen = len(load.answers)
        until(lambda: len(load.answers) >= seen + 50)
    assert says in refused["reason"]
    assert load.errors == []
    assert set(load.codes()) == {200}, load.codes()
    assert {v for _, v in load.answers} == {good}
    state = health(s)
    assert (state["status"], state["serving"]["version"], state["wanted_version"]) == ("degraded", good, bad)
    metrics = httpx.get(f"{s.serving_url}/metrics", timeout=10).text
    assert 'mlp_serving_model_swaps_total{outcome="refused"}' in metrics


def test_deploy_rolls_a_refused_champion_back_and_fails_naming_the_reason(server):
    s = server
    client = MlflowClient(s.mlflow_uri)
    good = register(s, "good")
    serve_version(s, good)
    assert deploy.rollout(s)["version"] == good  # the server runs and serves the champion: nothing to restart
    bad = register(s, "nan")
    audit.move(client, s.model_name, bad, who="test", why="a bad model passes the gate")
    with pytest.raises(deploy.ModelRefused, match=f"refused version {bad}: .*NaN.*rolled back to version {good}"):
        deploy.rollout(s)
    assert str(client.get_model_version_by_alias(s.model_name, "champion").version) == good
    last = audit.history(client, s.model_name)[-1]
    assert (last["from"], last["to"], last["kind"], last["who"]) == (
        bad,
        good,
        "rollback",
        "deploy (automatic rollback)",
    )
    assert health(s)["serving"]["version"] == good


def test_missing_features_get_a_503_naming_them_and_are_counted(server):
    s = server
    serve_version(s, register(s, "good"))
    r = httpx.post(f"{s.serving_url}/predict", json={**REQUEST, "customer_id": "C999999"}, timeout=30)
    assert r.status_code == 503
    assert r.headers["retry-after"]
    body = r.json()
    assert set(body["missing_features"]) == {
        "tickets_7d",
        "tickets_30d",
        "high_priority_share_30d",
        "avg_body_len_30d",
        "is_enterprise",
    }
    assert "C999999" in body["detail"]
    metrics = httpx.get(f"{s.serving_url}/metrics", timeout=10).text
    assert 'mlp_serving_missing_features_total{feature="tickets_30d"}' in metrics
    ok = httpx.post(f"{s.serving_url}/predict", json=REQUEST, timeout=30).json()
    assert ok["missing_features"] == []
    assert ok["features"]["tickets_30d"] == 7


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("content", "headers", "code", "says"),
    [
        (b'{"customer_id": "C000007", "subject": ', JSON, 422, "JSON decode error"),
        (b'{"customer_id": 7, "subject": "x", "body": "y"}', JSON, 422, "string"),
        (b'{"customer_id": "C1", "subject": "x"}', JSON, 422, "body"),
        (b'{"customer_id": "C1", "subject": "x", "body": "y", "x": 1}', JSON, 422, "Extra inputs"),
        (b"x" * 70_000, JSON, 413, "over the 65536"),
        (b"not json", {"content-type": "text/plain"}, 422, ""),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message_and_the_server_stays_up(server, content, headers, code, says):
    s = server
    r = httpx.post(f"{s.serving_url}/predict", content=content, headers=headers, timeout=30)
    assert r.status_code == code, r.text
    assert says in r.text
    assert health(s)["serving"] is not None


def test_an_oversized_chunked_body_is_cut_off_before_it_is_read_whole(server):
    s = server

    def chunks():
        for _ in range(100):  # 100 x 8 KiB, no Content-Length
            yield b" " * 8192

    r = httpx.post(f"{s.serving_url}/predict", content=chunks(), headers=JSON, timeout=30)
    assert r.status_code == 413, r.text
    assert health(s)["serving"] is not None


def test_served_predictions_are_logged_with_their_features(server):
    s = server
    version = register(s, "good")
    serve_version(s, version)
    for c in CUSTOMERS[:10]:
        assert httpx.post(f"{s.serving_url}/predict", json={**REQUEST, "customer_id": c}, timeout=30).status_code == 200
    logs = deploy.prediction_log_dir(s)

    def logged() -> pd.DataFrame | None:
        files = list(logs.glob("date=*/*.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files]) if files else None
        return frame if frame is not None and (frame.model_version == version).sum() >= 10 else None

    frame = until(logged, timeout=30)
    mine = frame[frame.model_version == version]
    assert set(CUSTOMERS[:10]) <= set(mine.customer_id)
    assert {"served_at", "tickets_30d", "is_enterprise", "escalation_probability"} <= set(mine.columns)
    assert mine.escalation_probability.between(0, 1).all()
    assert process.read_pid(s.home / "run" / "model-server.pid").alive()


def test_mlp_rollback_returns_the_champion_and_the_server_follows(server):
    import subprocess
    import sys

    s = server
    client = MlflowClient(s.mlflow_uri)
    first, second = register(s, "good"), register(s, "good_v2")
    audit.move(client, s.model_name, first, who="test", why="first")
    until(lambda: (health(s).get("serving") or {}).get("version") == first)
    audit.move(client, s.model_name, second, who="test", why="second")
    until(lambda: (health(s).get("serving") or {}).get("version") == second)
    env = {**os.environ, **s.as_env(), "COLUMNS": "250"}  # rich would fold the audit table's cells at 80
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "rollback", "--why", "answers look wrong", "--who", "oncall"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert str(client.get_model_version_by_alias(s.model_name, "champion").version) == first
    last = audit.history(client, s.model_name)[-1]
    assert (last["from"], last["to"], last["kind"], last["who"], last["why"]) == (
        second, first, "rollback", "oncall", "answers look wrong"
    )  # fmt: skip
    until(lambda: (health(s).get("serving") or {}).get("version") == first)  # no restart: it follows the alias
    listing = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "champion"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert "rollback" in listing.stdout
    assert "oncall" in listing.stdout
