"""GPU inventory from NVML (local profile). Zero GPUs is a valid answer, never an error."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mib: int
    unhealthy: str | None = None  # why the GPU must not take work (None: healthy)


def gpu_health(pynvml: Any, handle: Any) -> str | None:
    """What NVML says is wrong with a GPU: uncorrected ECC errors since the driver loaded, a failed row
    remapping (the memory needs a reset), or a temperature at or over the slowdown threshold. A check the
    device does not support is skipped. XID errors are events, not state: NVML reports them only to a
    listener registered before they happen (DCGM, the device plugin's health check), so they are not read here."""
    checks: list[tuple[str, Any]] = [
        (
            "uncorrected ECC errors",
            lambda: (
                pynvml.nvmlDeviceGetTotalEccErrors(
                    handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                )
                > 0
            ),
        ),
        ("row remapping failed", lambda: bool(pynvml.nvmlDeviceGetRemappedRows(handle)[3])),
        (
            "over temperature",
            lambda: (
                pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
                >= pynvml.nvmlDeviceGetTemperatureThreshold(handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
            ),
        ),
    ]
    for reason, failing in checks:
        try:
            if failing():
                return reason
        except pynvml.NVMLError:  # not supported on this device or driver
            continue
    return None


def healthy_count(gpus: list[GpuInfo]) -> int:
    return sum(1 for g in gpus if g.unhealthy is None)


def local_gpus() -> list[GpuInfo]:
    """GPUs NVML can see on this host, each with its health; an empty list where there is no driver or no
    GPU."""
    try:
        import pynvml
    except ImportError:  # nvidia-ml-py is a core dependency; guard for slim images
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("NVML not available (%s): 0 GPUs", exc)
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            why = gpu_health(pynvml, handle)
            if why:
                log.warning("GPU %d is unhealthy (%s): it does not count in the GPU pool", i, why)
            out.append(GpuInfo(i, name if isinstance(name, str) else name.decode(), int(mem.total) // 2**20, why))
        return out
    finally:
        pynvml.nvmlShutdown()


def gpu_profile_name(gpu: GpuInfo) -> str:
    """Pool name for a GPU model, e.g. ``NVIDIA H100 80GB HBM3`` -> ``gpu_h100``."""
    lowered = gpu.name.lower()
    for model in ("h200", "h100", "a100", "l40s", "l4", "a10g", "t4", "v100"):
        if model in lowered:
            return f"gpu_{model}"
    return "gpu_other"


def node_unusable(node: Any) -> str | None:
    """Why a node's GPUs do not count (None: they do): NotReady, cordoned, or tainted NoExecute."""
    if node.spec and node.spec.unschedulable:
        return "cordoned"
    ready = [c for c in (node.status.conditions or []) if c.type == "Ready"]
    if not ready or ready[0].status != "True":
        return "NotReady"
    for taint in (node.spec.taints if node.spec else None) or []:
        if taint.effect == "NoExecute":
            return f"tainted {taint.key}:NoExecute"
    return None


@dataclass(frozen=True)
class ClusterInventory:
    allocatable: dict[str, int]  # per GPU profile, summed over usable nodes
    largest_node: dict[str, int]  # per GPU profile, the most one usable node has (a pod runs on one node)
    excluded: dict[str, str]  # node name -> why its GPUs do not count


def cluster_inventory(
    core_api: Any, profiles: dict[str, dict[str, Any]], count_unusable: bool = False
) -> ClusterInventory:
    """Each profile's allocatable resource (``nvidia.com/gpu``, a MIG slice, a time-sliced share) over the
    Ready, schedulable nodes whose labels match the profile's node selector (``count_unusable``: over every
    node, what the cluster has when all of it is back)."""
    alloc: dict[str, int] = dict.fromkeys(profiles, 0)
    largest: dict[str, int] = dict.fromkeys(profiles, 0)
    excluded: dict[str, str] = {}
    for node in core_api.list_node().items:
        why = node_unusable(node)
        if why and not count_unusable:
            excluded[node.metadata.name] = why
            continue
        labels = node.metadata.labels or {}
        have = node.status.allocatable or {}
        for name, prof in profiles.items():
            if any(labels.get(k) != str(v) for k, v in prof["node_selector"].items()):
                continue
            n = int(str(have.get(prof["resource"], "0")))
            alloc[name] += n
            largest[name] = max(largest[name], n)
    return ClusterInventory(alloc, largest, excluded)
