"""
### ingest_events: Kafka → landing Parquet

Bounded consume of every topic of the reference pipeline (one mapped task per topic) into run-scoped
landing Parquet partitioned by event date; undecodable records go to `<topic>.dlq` with the reason;
offsets are committed only after the files are durable. Emits the landing Asset, which schedules
`validate_landing`. Runs hourly; trigger by hand for an immediate batch.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Metadata, Param, dag, get_current_context, task

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets

S = get_settings()
LANDING = Asset(assets.LANDING)


@dag(
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "ingest"],
    params={"max_records": Param(0, type="integer", minimum=0, description="records per topic (0: all pending)")},
    doc_md=__doc__,
)
def ingest_events() -> None:
    @task
    def ingest(topic: str) -> dict:
        from mlplatform.pipeline.stages import ingest_topic

        ctx = get_current_context()
        return ingest_topic(topic, ctx["run_id"], int(ctx["params"]["max_records"]))

    @task(outlets=[LANDING])
    def announce(batches: list[dict]):  # type: ignore[no-untyped-def]
        """Hand the landed batches to validate_landing through the Asset event's extra."""
        landed = [b for b in batches if b["records"] > 0]
        yield Metadata(LANDING, extra={"batches": landed})
        return {"batches": landed}

    announce(ingest.expand(topic=[S.tickets_topic, S.outcomes_topic]))


ingest_events()
