from __future__ import annotations

import pytest

from mlplatform.gpu.inventory import GpuInfo, gpu_profile_name, local_gpus


@pytest.mark.parametrize(
    ("name", "pool"),
    [
        ("NVIDIA H100 80GB HBM3", "gpu_h100"),
        ("NVIDIA A100-SXM4-40GB", "gpu_a100"),
        ("Tesla T4", "gpu_t4"),
        ("NVIDIA L4", "gpu_l4"),
        ("Some Future GPU", "gpu_other"),
    ],
)
def test_profile_names(name, pool):
    assert gpu_profile_name(GpuInfo(0, name, 1)) == pool


def test_local_inventory_never_raises():
    gpus = local_gpus()
    assert all(g.memory_total_mib > 0 for g in gpus)
