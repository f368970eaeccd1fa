"""
### deploy_model: serve the champion

Scheduled on the champion Asset. (Re)starts the model server on `models:/ticket_escalation@champion`
(local profile) and smoke-tests it with one real request that looks features up in Feast.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, dag, task

from mlplatform.pipeline import assets


@dag(
    schedule=[Asset(assets.CHAMPION)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "serve"],
    params={},
    doc_md=__doc__,
)
def deploy_model() -> None:
    @task
    def deploy() -> dict:
        from mlplatform.pipeline.stages import deploy as do_deploy

        return do_deploy()

    deploy()


deploy_model()
