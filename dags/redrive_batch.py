"""
### redrive_batch: let a quarantined batch flow on

A batch that fails its Great Expectations suite is quarantined (`landing/<topic>/_rejected/`, with its report
and Data Docs page) and never reaches Spark or Feast. Once the suite or the upstream data is fixed, trigger
this DAG: it validates the batch again with the current suite and, if it passes, releases its ranges as a
new validated batch and emits the validated Asset, so `build_features` picks them up. A batch that fails
again stays in quarantine, and the task log says why.

Params: `batch` (empty: every quarantined batch), `topic` (empty: every contract topic), `overrides` (suite
parameters in days for this re-drive, e.g. `{"stale_before": 90}` to accept an old backfill; recorded
with the batch). `mlp quarantine` lists what is held; `mlp redrive BATCH` triggers this DAG.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, get_current_context

from mlplatform.pipeline import assets
from mlplatform.pipeline.links import data_docs_task


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "validate"],
    params={
        "batch": Param("", type="string", description="the quarantined batch id (empty: every one)"),
        "topic": Param("", type="string", description="the topic of the batch (empty: every contract topic)"),
        "overrides": Param(
            {},
            type="object",
            additionalProperties={"type": "number"},
            description='suite parameters in days for this re-drive, e.g. {"stale_before": 90}',
        ),
    },
    doc_md=__doc__,
)
def redrive_batch() -> None:
    @data_docs_task(outlets=[Asset(assets.VALIDATED)])
    def redrive() -> dict:
        from mlplatform.pipeline.tasks import redrive as run

        return run(get_current_context()["params"])

    redrive()


redrive_batch()
