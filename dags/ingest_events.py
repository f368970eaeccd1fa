"""
### ingest_events: Kafka → landing Parquet, exactly once

Starts when events arrive: a Kafka `AssetWatcher` (`MessageQueueTrigger`, connection `kafka_watch`) fires
as soon as the ingestion group is behind on a topic, usually within seconds. The hourly schedule stays as
a safety net. Enabled by default.

One task per topic, each holding the topic's lane pool (`ingest_<topic>`, one slot, shared with
`ml_pipeline`), so two DAGs never land the same range. Each task reads the topic's partitions in
parallel, lands them as offset-named Parquet files with a manifest, and dead-letters poison to
`<topic>.dlq` in the same Kafka transaction as the offset commit. A time budget (`ingest_max_seconds`)
lands and commits what it read, and the next run continues. The task fails, after committing, when more
than `dlq_max_share` of a run went to the DLQ, naming the reasons.

Emits the landing Asset, which schedules `validate_landing`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronTriggerTimetable,
    Metadata,
    Param,
    dag,
    get_current_context,
    task,
)

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets
from mlplatform.pipeline.tasks import lane_pool

S = get_settings()
TOPICS = [S.tickets_topic, S.outcomes_topic]
LANDING = Asset(assets.LANDING)


def watched(topic: str) -> Asset:
    """The topic as an Asset whose watcher fires when the ingestion group is behind on it."""
    trigger = MessageQueueTrigger(
        scheme="kafka",
        topics=[topic],
        kafka_config_id="kafka_watch",
        apply_function="mlplatform.ingest.watch.new_events",
        apply_function_kwargs={"topic": topic, "group": S.consumer_group},
        poll_timeout=1,
        poll_interval=1,
    )
    return Asset(
        name=f"kafka_{topic}",
        uri=f"kafka://kafka_default/{topic}",
        watchers=[AssetWatcher(name=f"watch_{topic}", trigger=trigger)],
    )


WATCHED = [watched(t) for t in TOPICS]


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("@hourly", timezone="UTC"), assets=WATCHED[0] | WATCHED[1]
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # no max_active_runs=1: Airflow 3.3 strands asset events that arrive while a DAG is at its cap
    # (apache/airflow#56050); concurrent runs are fenced per topic by the lane pools
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "ingest"],
    params={
        "max_records": Param(0, type="integer", minimum=0, description="records per topic and run (0: no bound)"),
        "ingest_max_seconds": Param(
            900, type="integer", minimum=0, description="time budget per topic and run: land, commit, return (0: none)"
        ),
        "dlq_max_share": Param(
            0.05, type="number", minimum=0, maximum=1, description="fail when more of a run than this goes to the DLQ"
        ),
        "ingest_parallelism": Param(
            0, type="integer", minimum=0, maximum=64, description="partition worker processes (0: one per core)"
        ),
    },
    doc_md=__doc__,
)
def ingest_events() -> None:
    @task
    def ingest(topic: str) -> dict:
        from mlplatform.pipeline.tasks import ingest as run

        ctx = get_current_context()
        return run(topic, dict(ctx["params"]), ctx["run_id"])

    @task(outlets=[LANDING])
    def announce(batches: list[dict]):  # type: ignore[no-untyped-def]
        """Tell validate_landing what landed (counts only: validation claims the ranges itself)."""
        summary = [{k: b[k] for k in ("topic", "records", "dead_lettered", "lag", "ranges")} for b in batches]
        yield Metadata(LANDING, extra={"batches": summary})
        return {"batches": summary}

    landed = [ingest.override(task_id=f"ingest_{t.replace('.', '_')}", pool=lane_pool(t))(t) for t in TOPICS]
    announce(landed)


ingest_events()
