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


class _FakeNvml:
    """NVML's calls for one device, at the one edge no machine here has (a GPU driver)."""

    class NVMLError(Exception):
        pass

    NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC = 1, 0
    NVML_TEMPERATURE_GPU, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 0, 1

    def __init__(self, ecc: int = 0, remap_failed: bool = False, temp: int = 50, ecc_supported: bool = True):
        self.ecc, self.remap_failed, self.temp, self.ecc_supported = ecc, remap_failed, temp, ecc_supported

    def nvmlDeviceGetTotalEccErrors(self, handle, kind, counter):  # noqa: N802
        if not self.ecc_supported:
            raise self.NVMLError("Not Supported")
        return self.ecc

    def nvmlDeviceGetRemappedRows(self, handle):  # noqa: N802
        return (0, 0, False, self.remap_failed)

    def nvmlDeviceGetTemperature(self, handle, sensor):  # noqa: N802
        return self.temp

    def nvmlDeviceGetTemperatureThreshold(self, handle, kind):  # noqa: N802
        return 87


@pytest.mark.parametrize(
    ("nvml", "reason"),
    [
        (_FakeNvml(), None),
        (_FakeNvml(ecc=3), "uncorrected ECC errors"),
        (_FakeNvml(remap_failed=True), "row remapping failed"),
        (_FakeNvml(temp=91), "over temperature"),
        (_FakeNvml(ecc_supported=False, temp=60), None),  # a check the device lacks is skipped
    ],
)
def test_an_unhealthy_gpu_is_named_and_not_counted(nvml, reason):
    from mlplatform.gpu.inventory import gpu_health, healthy_count

    assert gpu_health(nvml, object()) == reason
    gpus = [GpuInfo(0, "NVIDIA H100", 1), GpuInfo(1, "NVIDIA H100", 1, gpu_health(nvml, object()))]
    assert healthy_count(gpus) == (2 if reason is None else 1)
