"""GPU inventory from NVML (local profile). Zero GPUs is a valid answer, never an error."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mib: int


def local_gpus() -> list[GpuInfo]:
    """GPUs NVML can see on this host; an empty list where there is no driver or no GPU."""
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
            out.append(GpuInfo(i, name if isinstance(name, str) else name.decode(), int(mem.total) // 2**20))
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
