"""
### sync_gpu_pools: the GPU pools follow the real inventory

Every 5 minutes (and at `mlp up`; paused at creation unless a cluster is configured, unpause it on a GPU
host): on the local profile `gpu_local` is the healthy GPUs NVML finds (ECC, row remapping, temperature); with
a cluster, each GPU profile's pools are sized from the Kubernetes API's node
allocatable, summed over Ready and schedulable nodes, and split into the team shares of the quota file
(`include/mlplatform/gpu/quota.yaml`), shrunk in proportion when nodes are gone. A node that goes NotReady
or is cordoned shrinks its pools here, so GPU tasks wait in Airflow instead of as Pending pods, and grows
them back when it returns. Skipped where no cluster is configured. Same as `mlp gpu sync`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets

S = get_settings()


@dag(
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    # on where a cluster is there to sync from
    is_paused_upon_creation=not (S.k8s or S.profile == "cluster"),
    default_args=assets.default_args(),
    tags=["mlplatform", "gpu", "ops"],
    params={
        "dry_run": Param(False, type="boolean", description="compute the pool sizes and report them, change nothing")
    },
    doc_md=__doc__,
)
def sync_gpu_pools() -> None:
    @task
    def sync() -> dict:
        from pathlib import Path

        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowSkipException

        from mlplatform.gpu.sync import sync_gpu_pools as do_sync
        from mlplatform.stack.airflow_api import AirflowClient

        conn = BaseHook.get_connection("airflow_api")
        url = f"{conn.schema or 'http'}://{conn.host}:{conn.port}"
        client = AirflowClient(url, conn.login or "", conn.password or "")
        if not Path(S.kubeconfig or S.home / "k8s" / "kubeconfig").exists():
            if S.profile == "cluster":
                raise AirflowSkipException("no cluster configured (MLP_KUBECONFIG, or `mlp up --k8s`)")
            from mlplatform.gpu.sync import sync_local_pool

            size, changed = sync_local_pool(S, client)
            return {"pools": {S.gpu_pool: size}, "changed": changed}
        result = do_sync(S, client, dry_run=bool(get_current_context()["params"]["dry_run"]))
        return {"pools": {p.name: p.slots for p in result.pools}, "changed": result.changed}

    sync()


sync_gpu_pools()
