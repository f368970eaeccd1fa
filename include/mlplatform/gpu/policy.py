"""Airflow cluster policies for the GPU quota (loaded through ``config/airflow_local_settings.py``).

* ``task_policy`` (parse time): a task that asks for GPUs (a KubernetesPodOperator whose container limits
  name an ``nvidia.com/*`` resource) must take a GPU pool with ``pool_slots`` equal to its GPUs, or the DAG
  does not load. That is what makes the pools a quota: no GPU task can bypass them.
* ``task_instance_mutation_hook`` (scheduler, when a run's task instances are created): a GPU task's pool,
  slots and priority weight come from the run's conf (``gpu_profile``, ``gpus``, ``team``, ``priority``),
  so the form's GPU ask is what Airflow counts. The pod itself is built from the same conf at run time
  (``launch/gpu_pod.py``). Airflow 3.3 passes ``dag_run`` to the hook; mapped tasks or templated fields
  cannot change ``pool``/``pool_slots``, which the scheduler reads from the task instance row.
"""

from __future__ import annotations

from typing import Any


def gpu_limit(task: Any) -> int:
    """GPUs (or MIG slices, or time-sliced shares) a task's container asks for; 0 when none."""
    resources = getattr(task, "container_resources", None)
    limits = getattr(resources, "limits", None) or {}
    return sum(int(str(v)) for k, v in limits.items() if str(k).startswith("nvidia.com/"))


def _is_gpu_pool(pool: str | None) -> bool:
    from mlplatform.gpu.quota import GPU_POOL_PREFIX

    return bool(pool and pool.startswith(GPU_POOL_PREFIX))


def _is_profile_pool(pool: str | None) -> bool:
    """A pool of a cluster GPU profile (gpu_<profile> or a team's gpu_<profile>__<team>), not gpu_local."""
    from mlplatform.launch.pods import gpu_profiles

    base = (pool or "").split("__", 1)[0]
    return any(p["pool"] == base for p in gpu_profiles().values())


def task_policy(task: Any) -> None:
    from airflow.exceptions import AirflowClusterPolicyViolation

    gpus = gpu_limit(task)
    if not gpus:
        return
    if not _is_gpu_pool(task.pool):
        raise AirflowClusterPolicyViolation(
            f"task {task.task_id!r} asks for {gpus} GPU(s) but takes pool {task.pool!r}: a GPU task must take "
            "a GPU pool (gpu_<profile> or gpu_<profile>__<team>), the quota"
        )
    if task.pool_slots != gpus:
        raise AirflowClusterPolicyViolation(
            f"task {task.task_id!r} asks for {gpus} GPU(s) but takes {task.pool_slots} slot(s) of pool "
            f"{task.pool!r}: pool_slots must equal the GPUs"
        )


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    from mlplatform.config.settings import get_settings
    from mlplatform.gpu.quota import request_for_conf

    # only the pod operator that builds its pod from the same conf; any other GPU task keeps what it declared
    if dag_run is None or task_instance.operator != "GpuPodOperator" or not _is_profile_pool(task_instance.pool):
        return
    s = get_settings()
    try:
        req = request_for_conf(dag_run.conf or {}, s.gpu_quota_file)
    except (ValueError, TypeError):
        return  # a bad ask: check_conf fails the run naming the field, before this task can start
    task_instance.pool = req.pool
    task_instance.pool_slots = req.gpus
    task_instance.priority_weight = req.priority_weight
