"""
### build_features: Spark → Feast

Scheduled on the validated Asset. The PySpark job (`spark_jobs/customer_features.py`, via
SparkSubmitOperator on `spark_default`) recomputes the customer-days that newly validated data touched (late
events reopen the days they fall in; Param `full_recompute` rebuilds everything); then `feast apply` and an
incremental materialization into the online store. Emits the features Asset, which
schedules `train_model`.

Enabled at creation, like `ingest_events` and `validate_landing`: whatever passes validation (a re-driven
batch included) becomes features and reaches the online store without anyone unpausing a DAG.
`train_model` and `deploy_model` stay paused until a person enables them. Two runs at once are safe: the
Spark job swaps its outputs in under a lock and materializations take turns on a PostgreSQL advisory lock.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, dag, task

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets
from mlplatform.pipeline.stages import spark_submit_kwargs

S = get_settings()


@dag(
    schedule=[Asset(assets.VALIDATED)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # no max_active_runs=1: Airflow 3.3 strands asset events that arrive while a DAG is at its cap
    # (apache/airflow#56050); two runs at once are safe here (see the module docstring)
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "features"],
    params={
        "full_recompute": Param(
            False,
            type="boolean",
            description="rebuild every customer-day from every validated batch instead of only the days new data"
            " touched (after a change to the feature definitions)",
        ),
    },
    doc_md=__doc__,
)
def build_features() -> None:
    spark_customer_features = SparkSubmitOperator(
        task_id="spark_customer_features", **spark_submit_kwargs(S, full="{{ params.full_recompute }}")
    )

    @task(outlets=[Asset(assets.FEATURES)])
    def publish() -> dict:
        from mlplatform.pipeline.stages import publish_features

        return publish_features()

    spark_customer_features >> publish()


build_features()
