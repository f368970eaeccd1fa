"""
### train_on_cluster: one training job as a GPU pod, sized by the run

`check_gpu_ask` (the ask against the team's share and the nodes, refused with the reason when no pool can
ever hold it; logs the cost estimate) → `train` (a KubernetesPodOperator pod: pool = the team's share of the
profile, `pool_slots` = `gpus`, priority weight from `priority`, all from this run's conf, not from parse
time). Deferrable: the GPUs stay held in the pool while the pod runs, and a restarted worker reattaches to
its pod instead of starting a second one.

Trigger from the form, or:
`airflow dags trigger train_on_cluster --conf '{"gpu_profile": "mig_1g10gb", "gpus": 1, "team": "search"}'`.
Pools come from `mlp gpu sync` (node allocatable × the quota file `include/mlplatform/gpu/quota.yaml`).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets
from mlplatform.pipeline.params import param_specs

S = get_settings()
GPU_PARAMS = ("gpu_profile", "gpus", "team", "priority", "epochs", "max_steps", "batch_size")


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=32,  # the GPU pools, not the run count, bound what runs at once
    max_active_tasks=32,
    is_paused_upon_creation=True,
    default_args=assets.default_args(),
    tags=["mlplatform", "gpu", "train"],
    params={k: Param(**spec) for k, spec in param_specs().items() if k in GPU_PARAMS},
    doc_md=__doc__,
)
def train_on_cluster() -> None:
    @task  # a refused ask fails at once (AirflowFailException skips the retries)
    def check_gpu_ask() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from mlplatform.gpu.quota import GpuQuotaError
        from mlplatform.pipeline.checks import check_cluster_ask

        params = dict(get_current_context()["params"])
        try:
            est = check_cluster_ask(params)
        except GpuQuotaError as exc:  # no retry can fix it
            raise AirflowFailException(str(exc)) from exc
        return {"ask": {k: params[k] for k in ("gpu_profile", "gpus", "team", "priority")}, "estimate": est}

    from mlplatform.launch.gpu_pod import GpuPodOperator
    from mlplatform.launch.pods import training_pod_kwargs

    train = GpuPodOperator(
        **{
            **training_pod_kwargs(
                task_id="train",
                gpus=1,
                profile="h100",
                get_logs=S.pod_logs,
                overrides={"epochs": "{{ params.epochs }}", "max_steps": "{{ params.max_steps }}"},
            ),
            "kubernetes_conn_id": "kubernetes_default",
            "do_xcom_push": False,
            "retries": 1,
        }
    )
    check_gpu_ask() >> train


train_on_cluster()
