"""``sync_gpu_pools``: size every GPU pool from the real inventory (at ``mlp up``, ``mlp gpu sync`` and on
the ``sync_gpu_pools`` DAG's schedule). Cluster profile: node allocatable from the Kubernetes API (Ready,
schedulable nodes); local profile: the GPUs NVML finds. A node that goes NotReady or is cordoned shrinks its
pools at the next sync and grows them back when it returns; team shares shrink in proportion. Every GPU
pool counts deferred tasks (``include_deferred``), so a deferrable KubernetesPodOperator waiting on its pod
keeps its GPUs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mlplatform.config.settings import Settings
from mlplatform.gpu.inventory import ClusterInventory, cluster_inventory
from mlplatform.gpu.quota import PoolPlan, load_quota, plan_pools

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResult:
    pools: list[PoolPlan]
    inventory: ClusterInventory
    changed: list[str]
    kueue: list[str] = field(default_factory=list)  # the Kueue objects applied (none where Kueue is absent)


def _cluster_api(s: Settings) -> Any:
    from kubernetes import config as kconfig

    from mlplatform.stack.k8s import kubeconfig_path

    return kconfig.new_client_from_config(config_file=s.kubeconfig or str(kubeconfig_path(s)))


def read_cluster_inventory(s: Settings, count_unusable: bool = False) -> ClusterInventory:
    from kubernetes import client as k8s

    from mlplatform.launch.pods import gpu_profiles

    api = _cluster_api(s)
    try:
        return cluster_inventory(k8s.CoreV1Api(api), gpu_profiles(), count_unusable=count_unusable)
    finally:
        api.close()


def apply_pools(client: Any, plans: list[PoolPlan]) -> list[str]:
    """Create or resize each pool through the Airflow REST API; returns the pools whose size changed."""
    from mlplatform.stack.airflow_api import AirflowApiError

    existing = {p["name"]: p for p in client.paged("/pools", "pools")}
    changed = []
    for plan in plans:
        body = {"slots": plan.slots, "description": plan.description, "include_deferred": True}
        old = existing.get(plan.name)
        if old is None:
            try:
                client.request("POST", "/pools", json={"name": plan.name, **body})
            except AirflowApiError as exc:  # created by a concurrent sync since the GET
                if "409" not in str(exc):
                    raise
                client.request("PATCH", f"/pools/{plan.name}", json={"pool": plan.name, **body})
            changed.append(plan.name)
        elif (old["slots"], old.get("description"), old.get("include_deferred")) != (
            plan.slots,
            plan.description,
            True,
        ):
            client.request("PATCH", f"/pools/{plan.name}", json={"pool": plan.name, **body})
            if old["slots"] != plan.slots:
                changed.append(plan.name)
    return changed


def sync_gpu_pools(
    s: Settings, client: Any, inventory: ClusterInventory | None = None, dry_run: bool = False
) -> SyncResult:
    inv = inventory or read_cluster_inventory(s)
    source = "k8s node allocatable"
    if inv.excluded:
        source += ", not counted: " + ", ".join(f"{n} {why}" for n, why in sorted(inv.excluded.items()))
    plans = plan_pools(inv.allocatable, load_quota(s.gpu_quota_file), source)
    if dry_run:
        return SyncResult(plans, inv, [])
    changed = apply_pools(client, plans)
    for name in changed:
        log.info("GPU pool %s resized: %s", name, next(p.description for p in plans if p.name == name))
    return SyncResult(plans, inv, changed, sync_kueue(s, plans))


def sync_kueue(s: Settings, plans: list[PoolPlan]) -> list[str]:
    """The same shares as Kueue ClusterQueues and LocalQueues, where the cluster serves Kueue's API (a
    server-side apply: the API server validates each object against Kueue's schema)."""
    from kubernetes.client.exceptions import ApiException

    from mlplatform.gpu.kueue import kueue_manifests, kueue_served
    from mlplatform.stack.k8s import apply_manifests

    api = _cluster_api(s)
    try:
        if not kueue_served(api):
            return []
        return apply_manifests(s, kueue_manifests(plans), api=api)
    except ApiException as exc:  # e.g. 403: this identity may not write Kueue objects; the pools still hold
        log.warning("Kueue queues not applied (%s %s): the Airflow pools are the quota", exc.status, exc.reason)
        return []
    finally:
        api.close()


def sync_local_pool(s: Settings, client: Any) -> tuple[int, list[str]]:
    """The local profile: ``gpu_local`` = the healthy GPUs NVML finds (an unhealthy one shrinks the pool until
    it recovers). Returns the size and the pools changed."""
    from mlplatform.gpu.inventory import healthy_count, local_gpus

    gpus = local_gpus()
    n = healthy_count(gpus)
    sick = ", ".join(f"GPU {g.index} {g.unhealthy}" for g in gpus if g.unhealthy)
    note = f"GPUs on this host, sized from NVML ({n} healthy of {len(gpus)}{'; not counted: ' + sick if sick else ''})"
    return n, apply_pools(client, [PoolPlan(s.gpu_pool, n, note)])
