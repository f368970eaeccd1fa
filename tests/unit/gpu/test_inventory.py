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


def test_local_inventory_matches_what_nvml_reports():
    """Checked against NVML itself: no driver means [] (never an error), a driver means one entry per device."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert local_gpus() == []
        return
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    gpus = local_gpus()
    assert len(gpus) == count
    assert [g.index for g in gpus] == list(range(count))
    for g in gpus:
        assert g.name, g
        assert g.memory_total_mib > 0, g
