"""
### batch_score: the champion over a day of tickets

Daily at 05:00 UTC, enabled by default, and on demand from the form or
`airflow dags trigger batch_score --conf '{"date": "2026-11-30"}'`. Scores every validated ticket whose event
date is `date` (default: yesterday, UTC) through `models:/ticket_escalation@champion`, pinned to one version
for the batch, each with its point-in-time Feast features as of the ticket's creation. Writes
`<data>/scores/ticket_escalation/date=<date>/scores.parquet` (atomic replace: a retry writes the same file)
and reports the counts; emits the scores Asset. Without a champion yet there is nothing to do (skipped).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, get_current_context, task

from mlplatform.pipeline import assets


@dag(
    schedule="0 5 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "inference", "batch"],
    params={
        "date": Param(
            "",
            type="string",
            pattern=r"^(\d{4}-\d{2}-\d{2})?$",
            description="event date of the tickets to score, YYYY-MM-DD (empty: yesterday, UTC)",
        ),
    },
    doc_md=__doc__,
)
def batch_score() -> None:
    @task(outlets=[Asset(assets.SCORES)])
    def score() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlplatform.pipeline.stages import NoChampionError
        from mlplatform.pipeline.stages import batch_score as run

        try:
            return run(str(get_current_context()["params"]["date"] or ""))
        except NoChampionError as exc:
            raise AirflowSkipException(str(exc)) from exc

    score()


batch_score()
