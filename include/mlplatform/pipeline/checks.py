"""Pre-flight checks run as the first task of a pipeline run."""

from __future__ import annotations

import logging
from typing import Any

from mlplatform.config.settings import get_settings
from mlplatform.gpu.inventory import healthy_count, local_gpus
from mlplatform.gpu.quota import GpuQuotaError
from mlplatform.pipeline.params import parse_conf

log = logging.getLogger(__name__)


def check_run_conf(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the run's conf (field named on error) and the GPU ask against what this host (local profile) or
    the cluster (cluster profile) has."""
    conf = parse_conf(params)
    s = get_settings()
    if s.profile == "local" and conf.train_device == "cuda":
        gpus = healthy_count(local_gpus())
        if gpus < max(conf.gpus, 1):
            raise GpuQuotaError(
                f"train_device=cuda asks for {max(conf.gpus, 1)} GPU(s) but NVML finds {gpus} healthy on this host, "
                f"so pool '{s.gpu_pool}' has {gpus} slot(s) and the task would queue forever. "
                "Use train_device=cpu or auto."
            )
    if s.profile == "cluster":
        check_cluster_storage(s.artifact_root)
        check_cluster_ask(conf.model_dump())
    return conf.model_dump()


OBJECT_STORES = ("s3://", "gs://", "gcs://", "abfs://", "az://")


def check_cluster_storage(artifact_root: str) -> None:
    """The cluster profile's training pod runs on another node: its snapshot, checkpoints and model must go
    through an object store, never a path on this host (which the pod cannot see)."""
    if not artifact_root.startswith(OBJECT_STORES):
        raise GpuQuotaError(
            f"MLP_ARTIFACT_ROOT={artifact_root!r}: on the cluster profile the training pod reads its snapshot and "
            "writes its checkpoints through an object store, so it must be one of "
            f"{', '.join(s + '...' for s in OBJECT_STORES)} (a local path is not on the pod's node)"
        )


def check_cluster_ask(conf: dict[str, Any]) -> dict[str, Any]:
    """Refuse a GPU ask no pool can ever satisfy: more than the team's pool has with every node back, or more
    than one node has. The message names the profile, the count and the pool's size. Returns the run's cost
    estimate (gpu/cost.py), which is also logged."""
    from mlplatform.gpu.quota import check_fits, load_quota, plan_pools, request_for_conf
    from mlplatform.gpu.sync import read_cluster_inventory

    s = get_settings()
    try:
        req = request_for_conf(conf, s.gpu_quota_file)
    except ValueError as exc:
        raise GpuQuotaError(str(exc)) from exc
    inv = read_cluster_inventory(s, count_unusable=True)
    sizes = {p.name: p.slots for p in plan_pools(inv.allocatable, load_quota(s.gpu_quota_file), "every node")}
    check_fits(req, sizes, inv.largest_node)
    from mlplatform.gpu.cost import estimate, measured_samples_per_s

    est = estimate(req, conf, measured_samples_per_s(req.profile, s.mlflow_uri, s.model_name))
    if "usd" in est:
        log.info(
            "estimate: %s GPU-hours of %s for team %s, about %.2f USD (%s samples/s per GPU, %s)",
            est["gpu_hours"], req.profile, req.team, est["usd"], est["samples_per_s_per_gpu"], est["throughput_source"],
        )  # fmt: skip
    else:
        log.info("estimate: %s", est["note"])
    return est
