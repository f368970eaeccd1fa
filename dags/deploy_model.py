"""
### deploy_model: serve the champion

Scheduled on the champion Asset, enabled by default. Makes sure the model server runs on
`models:/ticket_escalation@champion` (local profile), waits until it has swapped to the champion's
version in place (no restart, no dropped request), and smoke-tests it with one real request that looks
features up in Feast. A version the server refuses (it fails to load, raises, or scores NaN) is rolled
back in the registry, with the reason in the audit trail, and this task fails saying why.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, get_current_context, task

from mlplatform.pipeline import assets


@dag(
    schedule=[Asset(assets.CHAMPION)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # follows every promotion (no max_active_runs: see train_model)
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "serve"],
    params={
        "swap_timeout_s": Param(
            300,
            type="integer",
            minimum=10,
            maximum=3600,
            description="how long to wait for the server to load and swap to the champion before failing",
        ),
        "smoke_test": Param(True, type="boolean", description="send one real request after the swap"),
    },
    doc_md=__doc__,
)
def deploy_model() -> None:
    @task
    def deploy() -> dict:
        from mlplatform.pipeline.tasks import deploy as do_deploy

        params = get_current_context()["params"]
        return do_deploy(swap_timeout_s=params["swap_timeout_s"], smoke=params["smoke_test"])

    deploy()


deploy_model()
