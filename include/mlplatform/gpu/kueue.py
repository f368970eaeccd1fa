"""The GPU quota as Kueue objects, so a cluster that runs Kueue admits the training pods against the same shares
Airflow's pools hold.

One ClusterQueue per GPU pool, with the pool's slots as its ``nominalQuota`` (and the profile's CPU and memory
per GPU beside it, with room for the XCom sidecar), and one LocalQueue per ClusterQueue in the training
namespace, named as the pod's ``kueue.x-k8s.io/queue-name`` label
(:meth:`~mlplatform.gpu.quota.GpuRequest.labels`). The queues of one profile share a cohort, but a team's
queue neither lends nor borrows: a team's share is its own, as its pool is. One ResourceFlavor per profile
(its node labels and the GPU taint's toleration), and the three priority levels as WorkloadPriorityClasses
with the PriorityClasses' values. Queueing is ``BestEffortFIFO``, which is what Airflow does with a pool: the
highest priority first, and a task that does not fit lets a smaller one behind it start. No preemption, as the
PriorityClasses say.

``sync_gpu_pools`` applies these (server-side) wherever the cluster serves ``kueue.x-k8s.io/v1beta2``, with
the same sizes as the pools; ``mlp gpu kueue`` prints them for a cluster managed by GitOps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlplatform.gpu.quota import PRIORITY_CLASSES, PRIORITY_WEIGHTS, PoolPlan

KUEUE_API = "kueue.x-k8s.io/v1beta2"
TRAINING_NAMESPACE = "mlplatform"
PART_OF = {"app.kubernetes.io/part-of": "mlplatform"}
# headroom per slot for containers beside the trainer (KPO's XCom sidecar asks 1m CPU and 10Mi), so a pool
# that Airflow fills with GPU pods is never over its ClusterQueue's CPU or memory
SIDECAR_CPU_M = 100
SIDECAR_MEMORY_MI = 128


def _dashed(profile: str) -> str:
    return profile.replace("_", "-")


def queue_name(profile: str, team: str | None) -> str:
    """The LocalQueue of a team's share of a profile, or of the profile's shared remainder (``team`` None)."""
    return f"{team}-{_dashed(profile)}" if team else f"shared-{_dashed(profile)}"


def flavor_name(profile: str) -> str:
    return f"mlp-{_dashed(profile)}"


def priority_value(level: str) -> int:
    """The PriorityClass value of a level (docker/k8s/priority-classes.yaml): its Airflow weight x 1000."""
    return PRIORITY_WEIGHTS[level] * 1000


def kueue_manifests(plans: Iterable[PoolPlan], namespace: str = TRAINING_NAMESPACE) -> list[dict[str, Any]]:
    """ResourceFlavors, WorkloadPriorityClasses, then a ClusterQueue and a LocalQueue per GPU pool."""
    from mlplatform.launch.pods import GPU_TOLERATION, gpu_profiles

    profiles = gpu_profiles()
    plans = [p for p in plans if p.profile in profiles]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": KUEUE_API,
            "kind": "ResourceFlavor",
            "metadata": {"name": flavor_name(name), "labels": PART_OF},
            "spec": {"nodeLabels": dict(prof["node_selector"]), "tolerations": [dict(GPU_TOLERATION)]},
        }
        for name, prof in profiles.items()
    ]
    docs += [
        {
            "apiVersion": KUEUE_API,
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": cls, "labels": PART_OF},
            "value": priority_value(level),
            "description": f"mlplatform training, priority {level} (Airflow priority_weight {PRIORITY_WEIGHTS[level]})",
        }
        for level, cls in PRIORITY_CLASSES.items()
    ]
    for plan in plans:
        prof = profiles[plan.profile]
        queue = queue_name(plan.profile, plan.team)
        no_lending = {"lendingLimit": 0} if plan.team else {}
        quota = {  # the pods' CPU and memory per GPU, plus room for KPO's XCom sidecar (1m, 10Mi) per slot
            prof["resource"]: plan.slots,
            "cpu": f"{plan.slots * int(prof['cpu_per_gpu']) * 1000 + plan.slots * SIDECAR_CPU_M}m",
            "memory": f"{plan.slots * int(prof['memory_gib_per_gpu']) * 1024 + plan.slots * SIDECAR_MEMORY_MI}Mi",
        }
        docs.append(
            {
                "apiVersion": KUEUE_API,
                "kind": "ClusterQueue",
                "metadata": {"name": f"mlp-{queue}", "labels": {**PART_OF, "mlplatform/airflow-pool": plan.name}},
                "spec": {
                    "cohortName": f"mlp-{_dashed(plan.profile)}",
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "queueingStrategy": "BestEffortFIFO",
                    "preemption": {"withinClusterQueue": "Never", "reclaimWithinCohort": "Never"},
                    "resourceGroups": [
                        {
                            "coveredResources": list(quota),
                            "flavors": [
                                {
                                    "name": flavor_name(plan.profile),
                                    "resources": [
                                        # a team's share is its own: it lends none and borrows none
                                        {"name": res, "nominalQuota": q, "borrowingLimit": 0, **no_lending}
                                        for res, q in quota.items()
                                    ],
                                }
                            ],
                        }
                    ],
                },
            }
        )
        docs.append(
            {
                "apiVersion": KUEUE_API,
                "kind": "LocalQueue",
                "metadata": {"name": queue, "namespace": namespace, "labels": PART_OF},
                "spec": {"clusterQueue": f"mlp-{queue}"},
            }
        )
    return docs


def kueue_served(api: Any) -> bool:
    """Whether the cluster serves Kueue's API (its CRDs are installed)."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    try:
        groups = k8s.ApisApi(api).get_api_versions().groups
    except ApiException:
        return False
    return any(g.name == "kueue.x-k8s.io" and any(v.version == "v1beta2" for v in g.versions) for g in groups)
