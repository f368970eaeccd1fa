from __future__ import annotations

from pathlib import Path

import yaml

from mlplatform.gpu.kueue import kueue_manifests, priority_value, queue_name
from mlplatform.gpu.quota import load_quota, plan_pools, request_for_conf

ROOT = Path(__file__).resolve().parents[3]
QUOTA = ROOT / "include" / "mlplatform" / "gpu" / "quota.yaml"
INVENTORY = {"h100": 8, "a100": 4, "l4": 4, "mig_1g10gb": 4, "mig_3g40gb": 1, "l4_shared": 4}


def _docs(kind: str, inventory: dict[str, int] = INVENTORY) -> dict[str, dict]:
    plans = plan_pools(inventory, load_quota(QUOTA), "test")
    return {d["metadata"]["name"]: d for d in kueue_manifests(plans) if d["kind"] == kind}


def _quota(cq: dict) -> dict[str, object]:
    (flavor,) = cq["spec"]["resourceGroups"][0]["flavors"]
    return {r["name"]: r["nominalQuota"] for r in flavor["resources"]}


def test_one_cluster_queue_per_pool_with_its_size_and_a_local_queue_each():
    plans = plan_pools(INVENTORY, load_quota(QUOTA), "test")
    cqs, lqs = _docs("ClusterQueue"), _docs("LocalQueue")
    assert len(cqs) == len(lqs) == len(plans)
    # 6 H100s with 12 CPUs and 96 GiB each, and room for a sidecar per pod (100m, 128Mi)
    assert _quota(cqs["mlp-support-ml-h100"]) == {"nvidia.com/gpu": 6, "cpu": "72600m", "memory": "590592Mi"}
    assert _quota(cqs["mlp-search-h100"])["nvidia.com/gpu"] == 2
    assert _quota(cqs["mlp-shared-h100"])["nvidia.com/gpu"] == 0  # every H100 is a team's
    assert _quota(cqs["mlp-shared-a100"])["nvidia.com/gpu"] == 4
    assert lqs["support-ml-h100"]["spec"]["clusterQueue"] == "mlp-support-ml-h100"
    assert cqs["mlp-search-h100"]["metadata"]["labels"]["mlplatform/airflow-pool"] == "gpu_h100__search"


def test_queues_shrink_with_the_pools():
    cqs = _docs("ClusterQueue", {**INVENTORY, "h100": 4})
    assert (_quota(cqs["mlp-support-ml-h100"])["nvidia.com/gpu"], _quota(cqs["mlp-search-h100"])["nvidia.com/gpu"]) == (
        3,
        1,
    )


def test_a_team_share_neither_lends_nor_borrows():
    cqs = _docs("ClusterQueue")
    (team,) = cqs["mlp-search-mig-1g10gb"]["spec"]["resourceGroups"][0]["flavors"]
    assert all(r["borrowingLimit"] == 0 and r["lendingLimit"] == 0 for r in team["resources"])
    (shared,) = cqs["mlp-shared-l4"]["spec"]["resourceGroups"][0]["flavors"]
    assert all(r["borrowingLimit"] == 0 and "lendingLimit" not in r for r in shared["resources"])
    assert {c["spec"]["cohortName"] for n, c in cqs.items() if n.endswith("-h100")} == {"mlp-h100"}


def test_the_pod_label_names_the_queue_of_the_pool_it_takes():
    with_share = request_for_conf({"gpu_profile": "mig_1g10gb", "team": "search"}, QUOTA)
    assert with_share.labels()["kueue.x-k8s.io/queue-name"] == queue_name("mig_1g10gb", "search") == "search-mig-1g10gb"
    without = request_for_conf({"gpu_profile": "a100", "team": "search"}, QUOTA)
    assert without.pool == "gpu_a100"
    assert without.labels()["kueue.x-k8s.io/queue-name"] == "shared-a100"
    assert without.labels()["kueue.x-k8s.io/priority-class"] in _docs("WorkloadPriorityClass")


def test_flavors_select_the_profiles_nodes_and_priorities_match_the_priority_classes():
    flavors = _docs("ResourceFlavor")
    assert flavors["mlp-h100"]["spec"]["nodeLabels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert flavors["mlp-mig-1g10gb"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    classes = yaml.safe_load_all((ROOT / "docker" / "k8s" / "priority-classes.yaml").read_text())
    values = {c["metadata"]["name"]: c["value"] for c in classes if c}
    wpcs = _docs("WorkloadPriorityClass")
    assert {n: w["value"] for n, w in wpcs.items()} == values
    assert priority_value("high") > priority_value("normal") > priority_value("low")
