"""Pre-flight checks run as the first task of a pipeline run."""

from __future__ import annotations

from typing import Any

from mlplatform.config.settings import get_settings
from mlplatform.gpu.inventory import local_gpus
from mlplatform.pipeline.params import parse_conf


class GpuQuotaError(RuntimeError):
    pass


def check_run_conf(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the run's conf (field named on error) and the GPU ask against what this host has."""
    conf = parse_conf(params)
    s = get_settings()
    if s.profile == "local" and conf.train_device == "cuda":
        gpus = len(local_gpus())
        if gpus < max(conf.gpus, 1):
            raise GpuQuotaError(
                f"train_device=cuda asks for {max(conf.gpus, 1)} GPU(s) but NVML finds {gpus} on this host, so pool "
                f"'{s.gpu_pool}' has {gpus} slot(s) and the task would queue forever. Use train_device=cpu or auto."
            )
    return conf.model_dump()
