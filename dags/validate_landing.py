"""
### validate_landing: Great Expectations gate

Scheduled on the landing Asset. Validates every batch named in the triggering event with its suite
(`include/suites/<topic>.yaml`). A failure stops here, with each failed expectation in the task log, and
nothing is published; passing batches are marked validated and the validated Asset schedules
`build_features`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, dag, get_current_context, task

from mlplatform.pipeline import assets


@dag(
    schedule=[Asset(assets.LANDING)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "validate"],
    params={},
    doc_md=__doc__,
)
def validate_landing() -> None:
    @task
    def batches() -> list[dict]:
        events = get_current_context()["triggering_asset_events"][Asset(assets.LANDING)]
        return [b for event in events for b in (event.extra or {}).get("batches", [])]

    @task(outlets=[Asset(assets.VALIDATED)])
    def validate(batch: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from mlplatform.pipeline.stages import validate_batch
        from mlplatform.validation.suites import ValidationFailed

        try:
            return validate_batch(batch)
        except ValidationFailed as exc:  # the data will not change on retry: stop the chain now
            raise AirflowFailException(str(exc)) from exc

    validate.expand(batch=batches())


validate_landing()
