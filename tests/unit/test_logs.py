"""Log lines are JSON objects that carry the Airflow task, the team, the user and the stage. The real task log
of a pipeline run is checked by the e2e test; here, the rendering and the context rules."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mlplatform import logs

TASK_ENV = {
    "AIRFLOW_CTX_DAG_ID": "ml_pipeline",
    "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-12-01T10:00:00+00:00",
    "AIRFLOW_CTX_TASK_ID": "train",
    "AIRFLOW_CTX_TRY_NUMBER": "2",
    "AIRFLOW_CTX_DAG_OWNER": "support-ml",
}


@pytest.fixture
def stream(monkeypatch):
    for key, value in TASK_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLP_STAGE", "train")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("training", stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_is_json_with_the_task_team_stage_and_component(stream):
    logging.getLogger("training.loop").info("step %d loss=%.3f", 5, 0.25)
    logging.getLogger("mlplatform.x").warning("careful")
    first, second = lines(stream)
    assert first["event"] == "step 5 loss=0.250"
    assert (first["level"], second["level"]) == ("info", "warning")
    assert first["logger"] == "training.loop"
    for line in (first, second):
        assert {k: line[k] for k in ("dag_id", "run_id", "task_id", "try_number", "team", "stage", "component")} == {
            "dag_id": "ml_pipeline",
            "run_id": "manual__2026-12-01T10:00:00+00:00",
            "task_id": "train",
            "try_number": "2",
            "team": "support-ml",
            "stage": "train",
            "component": "training",
        }
        assert line["timestamp"].endswith("Z")


def test_a_staged_function_names_its_stage_and_user_and_an_exception_stays_one_line(stream, monkeypatch):
    monkeypatch.setenv("MLP_USER", "ana")

    @logs.staged("validate")
    def validate() -> None:
        try:
            raise ValueError("bad batch")
        except ValueError:
            logging.getLogger("mlplatform.validation").exception("failed")

    validate()
    logging.getLogger("mlplatform.after").info("outside")
    inside, outside = lines(stream)
    assert (inside["stage"], inside["user"]) == ("validate", "ana")
    assert "ValueError: bad batch" in inside["exception"]
    assert outside["stage"] == "train"  # the block's binding is gone; the process's own stage remains


def test_outside_airflow_only_what_is_known_is_there(monkeypatch):
    for key in (*TASK_ENV, "MLP_STAGE", "MLP_TEAM", "MLP_USER"):
        monkeypatch.delenv(key, raising=False)
    assert logs.context_from_env() == {}
    assert logs.context_from_env({"MLP_TEAM": "risk", "AIRFLOW_CTX_DAG_OWNER": "support-ml"}) == {"team": "risk"}
