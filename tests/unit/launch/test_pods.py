from __future__ import annotations

import pytest

from mlplatform.launch.local import training_argv
from mlplatform.launch.pods import gpu_profiles, training_command, training_pod_kwargs


def test_pod_requests_gpus_and_takes_pool_slots_equal_to_gpus():
    kw = training_pod_kwargs(task_id="train", gpus=4, profile="h100", overrides={"epochs": 2})
    res = kw["container_resources"]
    assert res.limits["nvidia.com/gpu"] == "4"
    assert res.requests["nvidia.com/gpu"] == "4"
    assert kw["pool"] == "gpu_h100__support-ml"  # the default team's share (gpu/quota.yaml)
    assert kw["pool_slots"] == 4
    assert kw["deferrable"]
    assert kw["reattach_on_restart"]
    assert kw["on_finish_action"] == "delete_pod"
    assert kw["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert kw["tolerations"][0].key == "nvidia.com/gpu"
    assert kw["cmds"] == ["torchrun"]
    assert "--nproc-per-node=4" in kw["arguments"]


def test_single_gpu_runs_python_and_mig_uses_its_resource():
    kw = training_pod_kwargs(task_id="t", gpus=1, profile="mig_1g10gb")
    assert kw["cmds"] == ["python"]
    assert kw["container_resources"].limits["nvidia.com/mig-1g.10gb"] == "1"
    assert kw["pool"] == "gpu_mig_1g10gb__support-ml"


def test_bad_profile_and_zero_gpus_are_rejected():
    with pytest.raises(ValueError, match="unknown GPU profile 'tpu'"):
        training_pod_kwargs(task_id="t", gpus=1, profile="tpu")
    with pytest.raises(ValueError, match="gpus >= 1"):
        training_pod_kwargs(task_id="t", gpus=0)


def test_every_profile_has_pool_resource_and_selector():
    for name, prof in gpu_profiles().items():
        assert prof["pool"].startswith("gpu_"), name
        assert prof["resource"].startswith("nvidia.com/"), name
        assert prof["node_selector"], name


def test_command_lines():
    cmds, args = training_command(1, "/c.yaml", {"max_steps": 3})
    assert cmds == ["python"]
    assert args == ["-m", "training", "--config", "/c.yaml", "--max-steps", "3"]
    argv = training_argv("c.yaml", {"feature_columns": ["a", "b"], "log_model": False, "skip": None})
    assert argv[-4:] == ["--feature-columns", '["a", "b"]', "--log-model", "false"]
