"""
### validate_landing: Great Expectations gate

Scheduled on the landing Asset, enabled by default. For each topic, claims every landed range that no
batch has validated or rejected yet (a run of `ml_pipeline` may already have claimed them: then there is
nothing to do) and validates it with the topic's suite (`include/suites/<topic>.yaml`). A failure stops
here, with each failed expectation in the task log, and the batch is recorded as rejected: it never
reaches Spark or Feast. When something new passed, the validated Asset schedules `build_features`.
Two runs at once are safe: validations of a topic take turns on a lock, so the second finds the ranges
claimed by the first.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, get_current_context, task

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets
from mlplatform.pipeline.links import data_docs_task

S = get_settings()


@dag(
    schedule=[Asset(assets.LANDING)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # no max_active_runs=1: Airflow 3.3 strands asset events that arrive while a DAG is at its cap
    # (apache/airflow#56050); two runs at once are safe here (see the module docstring)
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "validate"],
    params={
        "topics": Param(
            [S.tickets_topic, S.outcomes_topic],
            type="array",
            items={"type": "string", "enum": [S.tickets_topic, S.outcomes_topic]},
            minItems=1,
            uniqueItems=True,
            description="the contract topics to validate (one mapped task each)",
        ),
    },
    doc_md=__doc__,
)
def validate_landing() -> None:
    @task
    def topics() -> list[str]:
        return list(get_current_context()["params"]["topics"])

    @data_docs_task
    def validate(topic: str) -> dict:
        from mlplatform.pipeline.tasks import validate as run

        return run(topic, get_current_context()["run_id"])

    @task(outlets=[Asset(assets.VALIDATED)])
    def announce(results: list[dict]) -> dict:
        """Emit the validated Asset only when a batch passed (nothing new: skip, so nothing downstream runs)."""
        from airflow.sdk.exceptions import AirflowSkipException

        passed = [r for r in results if r.get("batch")]
        if not passed:
            raise AirflowSkipException("no new landed data to hand on")
        return {"batches": passed}

    announce(validate.expand(topic=topics()))


validate_landing()
