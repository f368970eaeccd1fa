from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlplatform.gpu.quota import (
    GpuQuotaError,
    check_fits,
    load_quota,
    plan_pools,
    request_for_conf,
    split_shares,
)

ROOT = Path(__file__).resolve().parents[3]
QUOTA = ROOT / "include" / "mlplatform" / "gpu" / "quota.yaml"


def test_shares_shrink_in_proportion_and_never_exceed_what_is_there():
    assert split_shares(8, {"a": 6, "b": 2}) == {"a": 6, "b": 2}
    assert split_shares(4, {"a": 6, "b": 2}) == {"a": 3, "b": 1}
    assert split_shares(0, {"a": 6, "b": 2}) == {"a": 0, "b": 0}
    for have in range(12):
        got = split_shares(have, {"a": 5, "b": 3, "c": 1})
        assert sum(got.values()) == min(have, 9)
        assert all(got[t] <= n for t, n in {"a": 5, "b": 3, "c": 1}.items())


def test_pools_are_team_shares_plus_the_unheld_rest():
    quota = {"support-ml": {"h100": 6}, "search": {"h100": 2, "a100": 1}}
    plans = {p.name: p.slots for p in plan_pools({"h100": 10, "a100": 4}, quota, "test")}
    assert plans["gpu_h100__support-ml"] == 6
    assert plans["gpu_h100__search"] == 2
    assert plans["gpu_h100"] == 2
    assert plans["gpu_a100__search"] == 1
    assert plans["gpu_a100"] == 3
    assert plans["gpu_l4"] == 0


def test_a_runs_conf_decides_pool_slots_and_priority():
    req = request_for_conf({"gpu_profile": "h100", "gpus": 2, "team": "search", "priority": "high"}, QUOTA)
    assert (req.pool, req.gpus, req.priority_weight, req.priority_class) == (
        "gpu_h100__search",
        2,
        100,
        "mlp-training-high",
    )
    assert req.resource == "nvidia.com/gpu"
    assert request_for_conf({"gpu_profile": "l4", "team": "nobody"}, QUOTA).pool == "gpu_l4"  # no share: shared
    assert request_for_conf({}, QUOTA).priority == "normal"
    with pytest.raises(ValueError, match="unknown GPU profile 'tpu'"):
        request_for_conf({"gpu_profile": "tpu"}, QUOTA)


def test_an_impossible_ask_names_the_profile_the_count_and_the_pool_size():
    req = request_for_conf({"gpu_profile": "h100", "gpus": 3, "team": "search"}, QUOTA)
    with pytest.raises(GpuQuotaError, match=re.escape("'h100' with gpus=3 can never run for team 'search': pool")):
        check_fits(req, {"gpu_h100__search": 2}, {"h100": 4})
    with pytest.raises(GpuQuotaError, match="largest node has 2"):
        check_fits(req, {"gpu_h100__search": 8}, {"h100": 2})
    check_fits(req, {"gpu_h100__search": 4}, {"h100": 4})


def test_the_committed_quota_file_loads(tmp_path):
    assert load_quota(QUOTA)["support-ml"]["h100"] == 6
    bad = tmp_path / "q.yaml"
    bad.write_text("teams:\n  a:\n    tpu: 1\n")
    with pytest.raises(ValueError, match="unknown GPU profile 'tpu'"):
        load_quota(bad)


def test_the_cluster_policy_refuses_a_gpu_task_outside_a_gpu_pool():
    from airflow.exceptions import AirflowClusterPolicyViolation
    from kubernetes.client import models as k8s

    from mlplatform.gpu.policy import task_policy

    def task(pool: str, slots: int) -> SimpleNamespace:
        res = k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": "2"})
        return SimpleNamespace(task_id="t", pool=pool, pool_slots=slots, container_resources=res)

    task_policy(task("gpu_h100__search", 2))
    task_policy(SimpleNamespace(task_id="cpu", pool="default_pool", pool_slots=1))
    with pytest.raises(AirflowClusterPolicyViolation, match="must take a GPU pool"):
        task_policy(task("default_pool", 2))
    with pytest.raises(AirflowClusterPolicyViolation, match="pool_slots must equal the GPUs"):
        task_policy(task("gpu_h100", 1))


def test_the_mutation_hook_takes_pool_slots_and_weight_from_the_runs_conf(monkeypatch):
    from mlplatform.config.settings import get_settings
    from mlplatform.gpu.policy import task_instance_mutation_hook

    monkeypatch.setenv("MLP_PROFILE", "cluster")
    get_settings.cache_clear()
    try:
        ti = SimpleNamespace(operator="GpuPodOperator", pool="gpu_h100__support-ml", pool_slots=1, priority_weight=1)
        run = SimpleNamespace(conf={"gpu_profile": "mig_1g10gb", "gpus": 2, "team": "search", "priority": "low"})
        task_instance_mutation_hook(ti, dag_run=run)
        assert (ti.pool, ti.pool_slots, ti.priority_weight) == ("gpu_mig_1g10gb__search", 2, 1)
        cpu = SimpleNamespace(operator="PythonOperator", pool="default_pool", pool_slots=1, priority_weight=1)
        task_instance_mutation_hook(cpu, dag_run=run)
        assert cpu.pool == "default_pool"
        other = SimpleNamespace(operator="KubernetesPodOperator", pool="gpu_a100", pool_slots=4, priority_weight=1)
        task_instance_mutation_hook(other, dag_run=run)  # a plain pod operator keeps the pool it declared
        assert (other.pool, other.pool_slots) == ("gpu_a100", 4)
        bad = SimpleNamespace(operator="GpuPodOperator", pool="gpu_h100", pool_slots=1, priority_weight=1)
        task_instance_mutation_hook(bad, dag_run=SimpleNamespace(conf={"gpu_profile": "tpu"}))
        assert bad.pool == "gpu_h100"  # left for check_conf to refuse, naming the field
    finally:
        get_settings.cache_clear()


def test_the_process_count_follows_the_gpus():
    from mlplatform.launch.gpu_pod import with_process_count

    cmds, args = with_process_count(["python"], ["-m", "training"], 4)
    assert (cmds, args) == (["torchrun"], ["--standalone", "--nproc-per-node=4", "-m", "training"])
    assert with_process_count(cmds, args, 1) == (["python"], ["-m", "training"])
    assert with_process_count(cmds, args, 2)[1][:2] == ["--standalone", "--nproc-per-node=2"]


def test_the_build_script_and_the_stack_agree_on_the_kubernetes_version():
    from mlplatform.stack.k8s import K8S_VERSION

    script = (ROOT / "scripts" / "build-k8s.sh").read_text()
    assert f"K8S_VERSION=${{K8S_VERSION:-{K8S_VERSION}}}" in script


def test_every_gpu_a_simulated_node_counts_can_be_scheduled_with_its_cpu_and_memory():
    """A pool slot must never become a Pending pod: each profile's CPU and memory per GPU, times the GPUs a
    node offers, fits the node."""
    import yaml

    from mlplatform.launch.pods import gpu_profiles

    def qty(v: str) -> float:
        units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
        return float(v[:-2]) * units[v[-2:]] if v[-2:] in units else float(v)

    nodes = [n for n in yaml.safe_load_all((ROOT / "docker" / "k8s" / "sim" / "nodes.yaml").read_text()) if n]
    checked = 0
    for node in nodes:
        labels, have = node["metadata"]["labels"], node["status"]["allocatable"]
        cpu = mem = 0.0
        for prof in gpu_profiles().values():
            n = int(have.get(prof["resource"], 0))
            if n and all(labels.get(k) == str(v) for k, v in prof["node_selector"].items()):
                cpu += n * prof["cpu_per_gpu"]
                mem += n * prof["memory_gib_per_gpu"]
                checked += 1
        assert cpu <= qty(have["cpu"]), node["metadata"]["name"]
        assert mem <= qty(have["memory"]), node["metadata"]["name"]
    assert checked >= 6
