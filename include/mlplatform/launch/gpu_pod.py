"""The training pod operator: a KubernetesPodOperator whose GPU ask comes from the run, not from parse time.

At parse time the task carries the default profile's pool, slots and pod (so the DAG parses, and the cluster
policy checks it). The scheduler's ``task_instance_mutation_hook`` re-routes the task instance to the run's
pool, slots and priority weight; this operator, when it builds the pod, applies the same
:class:`~mlplatform.gpu.quota.GpuRequest` to the container resources, node selector, tolerations, priority
class, labels (team, profile, Kueue queue) and the process count. Both read the run's conf through
:func:`~mlplatform.gpu.quota.request_for_conf`, so the pool and the pod never disagree.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from mlplatform.gpu.quota import GpuRequest


def with_process_count(cmds: list[str], arguments: list[str], gpus: int) -> tuple[list[str], list[str]]:
    """torchrun with one process per GPU for several GPUs, plain python for one (see pods.training_command)."""
    args = list(arguments)
    if cmds == ["torchrun"]:
        args = [a for a in args if a != "--standalone" and not a.startswith("--nproc-per-node=")]
    if gpus > 1:
        return ["torchrun"], ["--standalone", f"--nproc-per-node={gpus}", *args]
    return ["python"], args


def apply_request(op: KubernetesPodOperator, req: GpuRequest) -> None:
    from mlplatform.launch.pods import GPU_TOLERATION

    limits = {req.resource: str(req.gpus), **req.host_share()}
    op.container_resources = k8s.V1ResourceRequirements(requests=limits, limits=limits)
    op.node_selector = dict(req.node_selector)
    op.tolerations = [k8s.V1Toleration(**GPU_TOLERATION)]
    op.priority_class_name = req.priority_class
    op.labels = {**(op.labels or {}), **req.labels()}
    op.cmds, op.arguments = with_process_count(list(op.cmds or []), list(op.arguments or []), req.gpus)
    from airflow.providers.cncf.kubernetes.backcompat.backwards_compat_converters import convert_env_vars

    tagged = {"MLP_GPU_PROFILE": req.profile, "MLP_TEAM": req.team}  # the MLflow run's tags
    current = convert_env_vars(op.env_vars or [])  # a dict until templates are rendered
    op.env_vars = [e for e in current if e.name not in tagged] + [
        k8s.V1EnvVar(name=k, value=v) for k, v in tagged.items()
    ]


class GpuPodOperator(KubernetesPodOperator):
    """KubernetesPodOperator + the run's GPU request (see the module doc).

    A retry never trains twice for one finished pod. KubernetesPodOperator reattaches a retry to its earlier
    try's pod while that pod runs, but one that already *Succeeded* (the worker died after the pod ended and
    before the task recorded it) it deletes and starts again: GPU hours for a result that exists (the model
    and its MLflow run are in the object store). This operator reattaches to that pod and finishes the task
    from it. Without an XCom sidecar only: with one, the pod stays Running until the result is read, and a
    Succeeded pod means the sidecar (and the result with it) is gone, so it trains again as KPO does."""

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        if context is not None:
            from mlplatform.config.settings import get_settings
            from mlplatform.gpu.quota import request_for_conf

            apply_request(self, request_for_conf(dict(context["params"]), get_settings().gpu_quota_file))
        return super().build_pod_request_obj(context, dry_run=dry_run)

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        if self.reattach_on_restart and not self.do_xcom_push:
            pod = self._get_pod_from_task_state_store(context) or self.find_pod(
                pod_request_obj.metadata.namespace, context=context
            )
            status = pod.status if pod is not None else None
            phase = status.phase if status is not None else None
            evicted = status is not None and (status.reason or "").lower() == "evicted"
            if pod is not None and phase != "Failed" and not evicted:
                # Running or Pending: KPO's own reattach; Succeeded: ours. From this one read, so a pod that
                # finishes between two reads is never taken for a finished one and started again.
                self.log.info(
                    "Reattaching to pod %s of try %s (%s)%s",
                    pod.metadata.name,
                    (pod.metadata.labels or {}).get("try_number"),
                    phase,
                    ": it already Succeeded, finishing from it instead of training again"
                    if phase == "Succeeded"
                    else "",
                )
                self._persist_pod_identity_to_task_state_store(context, pod)
                return pod
        return super().get_or_create_pod(pod_request_obj, context)

    def process_pod_deletion(self, pod: k8s.V1Pod, *, reraise: bool = True) -> bool:
        """Label the pod ``already_checked`` before deleting it: if the delete fails, a later clear of the task
        must train afresh, not reattach to the finished pod (KPO labels only the pods it keeps)."""
        if pod is not None and self.reattach_on_restart:
            self.patch_already_checked(pod, reraise=False)
        deleted: bool = super().process_pod_deletion(pod, reraise=reraise)
        return deleted
