"""
### train_model: Feast training set → training program → MLflow gate

Retraining, enabled by default: scheduled on the drift Asset (`monitor_drift` found the served data or
scores shifted) and daily at 04:00 UTC. Writes the point-in-time training snapshot (less its latest
days: the gate's evaluation set), runs the training program with the local launcher, registers the
model and scores it and the champion on that same set. A winner is promoted, after a person's
approval when `require_approval` is on; the promotion emits the champion Asset, which schedules
`deploy_model`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets
from mlplatform.pipeline.params import param_specs
from mlplatform.pipeline.promotion import gate_to_champion

S = get_settings()
GATE_PARAMS = ("holdout_days", "min_delta", "require_approval")


@dag(
    # retraining: when drift is measured, and daily as a safety net (not on every feature publish: with
    # event-driven ingestion that is every few minutes)
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * *", timezone="UTC"), assets=Asset(assets.DRIFT)
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # enabled, and no max_active_runs=1 (apache/airflow#56050 strands asset events at the cap): two runs at
    # once each gate against the champion they saw; the later promotion is refused as stale
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "stage", "train"],
    params={
        "epochs": Param(1, type="integer", minimum=1, maximum=50, description="training epochs"),
        "max_steps": Param(0, type="integer", minimum=0, description="optimizer steps (0: full epochs)"),
        "encoder": Param("minilm", type="string", minLength=1, description="minilm, HF dir or s3:// path"),
        **{k: Param(**spec) for k, spec in param_specs().items() if k in GATE_PARAMS},
    },
    doc_md=__doc__,
)
def train_model() -> None:
    @task
    def snapshot() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlplatform.pipeline.stages import NoTrainingData, training_snapshot

        ctx = get_current_context()
        try:
            return training_snapshot(ctx["run_id"], holdout_days=int(ctx["params"]["holdout_days"]))
        except NoTrainingData as exc:  # a scheduled run before any data: nothing to retrain
            raise AirflowSkipException(str(exc)) from exc

    @task(pool="cpu_train" if S.train_device != "cuda" else S.gpu_pool)
    def train(snap: dict) -> dict:
        from mlplatform.pipeline.stages import train_local

        ctx = get_current_context()
        return train_local(snap, ctx["run_id"], dict(ctx["params"]))

    @task(outlets=[Asset(assets.CANDIDATE)])
    def register(result: dict, snap: dict) -> dict:
        from mlplatform.pipeline.stages import register as do_register

        return do_register(result, snap, min_delta=float(get_current_context()["params"]["min_delta"]))

    snap = snapshot()
    gate_to_champion(register(train(snap), snap), outlets=[Asset(assets.CHAMPION)])


train_model()
