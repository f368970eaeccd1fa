"""The GPU quota against a real Kubernetes control plane (etcd, kube-apiserver, kube-scheduler built from the
Go module proxy, kwok's simulated GPU nodes) and the test stack's real Airflow: node allocatable becomes pool
sizes, a NotReady or cordoned node shrinks them, each run's GPU ask lands its pod on the right node, and an
ask no pool can satisfy is refused before anything starts."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest

from mlplatform.gpu.quota import GpuQuotaError, load_quota
from mlplatform.stack import process
from mlplatform.stack.airflow_api import AirflowClient
from mlplatform.stack.k8s import K8S_SERVICES, api_client, apply_manifests, bootstrap_cluster, fetch_k8s

# the first test may wait for the control plane build that `make test` started in the background
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def control_plane(stack, settings):  # type: ignore[no-untyped-def]
    """The stack's control plane, started for this module (the binaries are built once per machine: in CI
    `make test` starts that build in the background before the suite, and this waits for it)."""
    fetch_k8s(settings)
    before = {s.name for s in stack.status() if s.running}
    stack.up(only=list(K8S_SERVICES))
    bootstrap_cluster(settings)  # idempotent: also where the control plane ran before (MLP_KEEP_STACK)
    yield settings
    for svc in reversed(stack.services):
        if svc.name in K8S_SERVICES and svc.name not in before:
            process.stop(stack.pid_file(svc))


@pytest.fixture
def core(control_plane):  # type: ignore[no-untyped-def]
    from kubernetes import client as k8s

    api = api_client(control_plane)
    yield k8s.CoreV1Api(api)
    api.close()


@pytest.fixture
def airflow(stack, settings):  # type: ignore[no-untyped-def]
    return AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())


def _set_ready(core, node: str, ready: bool) -> None:  # type: ignore[no-untyped-def]
    """What a kubelet that stops posting status looks like (there is no controller-manager to do it)."""
    status = "True" if ready else "False"
    body = {"status": {"conditions": [{"type": "Ready", "status": status, "reason": "Simulated", "message": "test"}]}}
    core.patch_node_status(node, body)


def _pools(airflow) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {p["name"]: p for p in airflow.request("GET", "/pools", params={"limit": 1000})["pools"]}


def test_pools_follow_node_allocatable_and_shrink_with_a_notready_or_cordoned_node(control_plane, core, airflow):
    from mlplatform.gpu.sync import read_cluster_inventory, sync_gpu_pools

    inv = read_cluster_inventory(control_plane)
    assert inv.allocatable == {"h100": 8, "a100": 4, "l4": 4, "mig_1g10gb": 4, "mig_3g40gb": 1, "l4_shared": 4}
    assert inv.largest_node["h100"] == 4
    sync_gpu_pools(control_plane, airflow)
    pools = _pools(airflow)
    assert pools["gpu_h100__support-ml"]["slots"] == 6
    assert pools["gpu_h100__search"]["slots"] == 2
    assert pools["gpu_h100"]["slots"] == 0  # every H100 is some team's share
    assert pools["gpu_a100"]["slots"] == 4
    assert pools["gpu_l4_shared"]["slots"] == 4
    assert all(p["include_deferred"] for name, p in pools.items() if name.startswith("gpu_") and name != "gpu_local")
    try:
        _set_ready(core, "h100-b", False)
        result = sync_gpu_pools(control_plane, airflow)
        assert result.inventory.excluded == {"h100-b": "NotReady"}
        pools = _pools(airflow)
        assert (pools["gpu_h100__support-ml"]["slots"], pools["gpu_h100__search"]["slots"]) == (3, 1)
        assert "h100-b NotReady" in pools["gpu_h100__search"]["description"]
        assert sorted(result.changed) == ["gpu_h100__search", "gpu_h100__support-ml"]
        _set_ready(core, "h100-b", True)
        core.patch_node("h100-a", {"spec": {"unschedulable": True}})  # kubectl cordon
        sync_gpu_pools(control_plane, airflow)
        pools = _pools(airflow)
        assert (pools["gpu_h100__support-ml"]["slots"], pools["gpu_h100__search"]["slots"]) == (3, 1)
    finally:
        _set_ready(core, "h100-b", True)
        core.patch_node("h100-a", {"spec": {"unschedulable": False}})
    assert sync_gpu_pools(control_plane, airflow).inventory.allocatable["h100"] == 8
    pools = _pools(airflow)
    assert (pools["gpu_h100__support-ml"]["slots"], pools["gpu_h100__search"]["slots"]) == (6, 2)


def test_an_ask_no_pool_can_ever_satisfy_is_refused_at_check_conf(control_plane):
    from mlplatform.pipeline.checks import check_cluster_ask

    check_cluster_ask({"gpu_profile": "h100", "gpus": 4, "team": "support-ml"})  # fits a node and the share
    with pytest.raises(GpuQuotaError, match=r"'h100' with gpus=3 .* pool 'gpu_h100__search' has 2 slot"):
        check_cluster_ask({"gpu_profile": "h100", "gpus": 3, "team": "search"})
    with pytest.raises(GpuQuotaError, match=r"'h100' with gpus=6 .* largest node has 4 nvidia.com/gpu"):
        check_cluster_ask({"gpu_profile": "h100", "gpus": 6, "team": "support-ml"})
    with pytest.raises(GpuQuotaError, match=r"'mig_3g40gb' with gpus=2 .* pool 'gpu_mig_3g40gb' has 1 slot"):
        check_cluster_ask({"gpu_profile": "mig_3g40gb", "gpus": 2, "team": "support-ml"})


def _run_pod(settings, conf: dict) -> dict:  # type: ignore[no-untyped-def]
    """GpuPodOperator.execute for a run with ``conf``, against the real API; the pod is kept (and then deleted
    here) so the test reads what the API server recorded."""
    from kubernetes import client as k8s

    from mlplatform.launch.gpu_pod import GpuPodOperator
    from mlplatform.launch.pods import training_pod_kwargs
    from mlplatform.stack.k8s import kubeconfig_path

    kwargs = training_pod_kwargs(task_id="train", gpus=1, profile="h100", get_logs=False)
    kwargs.update(
        namespace="mlplatform",
        deferrable=False,
        on_finish_action="keep_pod",
        config_file=str(kubeconfig_path(settings)),
        in_cluster=False,
        kubernetes_conn_id=None,
        startup_timeout_seconds=60,
        poll_interval=1,
        service_account_name="mlp-train",
    )
    op = GpuPodOperator(**kwargs)
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    ti = SimpleNamespace(
        dag_id="ml_pipeline", task_id="train", run_id=run_id, map_index=-1, try_number=1, xcom_push=lambda *a, **k: None
    )
    context = {
        "ti": ti,
        "task_instance": ti,
        "run_id": run_id,
        "params": conf,
        "dag": SimpleNamespace(dag_id="ml_pipeline"),
        "dag_run": SimpleNamespace(run_id=run_id, conf=conf),
    }
    op.execute(context)
    api = api_client(settings)
    core = k8s.CoreV1Api(api)
    (pod,) = core.list_namespaced_pod("mlplatform", label_selector=f"run_id={run_id}").items
    core.delete_namespaced_pod(pod.metadata.name, "mlplatform", grace_period_seconds=0)
    api.close()
    return pod.to_dict()


@pytest.mark.parametrize(
    ("conf", "node", "resource", "count"),
    [
        ({"gpu_profile": "h100", "gpus": 2, "team": "search", "priority": "high"}, "h100-", "nvidia.com/gpu", "2"),
        ({"gpu_profile": "mig_3g40gb", "gpus": 1}, "mig-a", "nvidia.com/mig-3g.40gb", "1"),
        ({"gpu_profile": "l4_shared", "gpus": 1, "priority": "low"}, "l4-shared-a", "nvidia.com/gpu.shared", "1"),
    ],
    ids=["h100", "mig", "time-sliced"],
)
def test_each_runs_gpu_ask_lands_its_pod_on_the_right_node(control_plane, conf, node, resource, count):
    pod = _run_pod(control_plane, conf)
    spec, main = pod["spec"], pod["spec"]["containers"][0]
    assert spec["node_name"].startswith(node)
    assert pod["status"]["phase"] == "Succeeded"
    assert main["resources"]["limits"][resource] == count
    assert main["resources"]["requests"][resource] == count
    labels = pod["metadata"]["labels"]
    team = conf.get("team", "support-ml")
    assert labels["mlplatform/team"] == team
    # the team's own queue where it has a share of the profile, else the profile's shared one (as the pool)
    has_share = load_quota(control_plane.gpu_quota_file).get(team, {}).get(conf["gpu_profile"], 0) > 0
    queue = f"{team if has_share else 'shared'}-{conf['gpu_profile'].replace('_', '-')}"
    assert labels["kueue.x-k8s.io/queue-name"] == queue
    assert labels["dag_id"] == "ml_pipeline"
    assert spec["priority_class_name"] == f"mlp-training-{conf.get('priority', 'normal')}"
    assert spec["priority"] == {"high": 100000, "normal": 10000, "low": 1000}[conf.get("priority", "normal")]
    assert spec["security_context"]["run_as_non_root"] is True
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}.items() <= {
        k: v for k, v in spec["tolerations"][0].items() if v is not None
    }.items()
    if int(count) > 1:
        assert main["command"] == ["torchrun"]
        assert f"--nproc-per-node={count}" in main["args"]


def test_cluster_manifests_are_applied_and_a_schema_error_is_refused(control_plane):
    from kubernetes.client.exceptions import ApiException

    from mlplatform.stack.k8s import load_manifests

    repo = control_plane.repo_root / "docker" / "k8s"
    for name in ("priority-classes.yaml", "training-rbac.yaml", "serving.yaml", "gpu-operator-configs.yaml"):
        assert apply_manifests(control_plane, load_manifests(repo / name), dry_run=True)
    broken = load_manifests(repo / "priority-classes.yaml")[0]
    broken["valu"] = broken.pop("value")  # a typo the API server's schema catches
    with pytest.raises(ApiException) as err:
        apply_manifests(control_plane, [broken], dry_run=True)
    assert ".valu: field not declared in schema" in str(err.value.body)


def test_kueue_queues_hold_the_pools_shares_and_a_schema_error_is_refused(control_plane, core, airflow):
    """Kueue's own CRDs (from its Go module) on the API server: the sync applies a ClusterQueue per GPU pool
    with the pool's size, and the LocalQueue each pod's queue-name label names; they shrink with the pools."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from mlplatform.gpu.kueue import kueue_manifests
    from mlplatform.gpu.quota import request_for_conf
    from mlplatform.gpu.sync import sync_gpu_pools

    api = api_client(control_plane)
    co = k8s.CustomObjectsApi(api)

    def queues() -> tuple[dict, dict]:
        cqs = co.list_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "clusterqueues")["items"]
        lqs = co.list_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", "mlplatform", "localqueues")["items"]
        return {c["metadata"]["name"]: c for c in cqs}, {q["metadata"]["name"]: q for q in lqs}

    def nominal(cq: dict, resource: str) -> int | str:
        (flavor,) = cq["spec"]["resourceGroups"][0]["flavors"]
        quota = next(r["nominalQuota"] for r in flavor["resources"] if r["name"] == resource)
        return quota if resource in ("cpu", "memory") else int(quota)

    try:
        result = sync_gpu_pools(control_plane, airflow)
        assert "ClusterQueue/mlp-support-ml-h100" in result.kueue
        cqs, lqs = queues()
        by_pool = {c["metadata"]["labels"]["mlplatform/airflow-pool"]: c for c in cqs.values()}
        for plan in result.pools:  # every pool is a ClusterQueue of the same size
            resource = {"h100": "nvidia.com/gpu", "mig_1g10gb": "nvidia.com/mig-1g.10gb"}.get(plan.profile)
            if resource:
                assert nominal(by_pool[plan.name], resource) == plan.slots, plan
        assert nominal(cqs["mlp-support-ml-h100"], "cpu") == "72600m"  # the CPU of 6 GPUs, and sidecars' room
        for conf in (
            {"gpu_profile": "h100", "gpus": 2, "team": "search"},
            {"gpu_profile": "a100", "gpus": 1, "team": "search"},  # no share of A100s: the shared queue
            {"gpu_profile": "mig_1g10gb", "gpus": 1, "team": "support-ml"},
        ):
            req = request_for_conf(conf, control_plane.gpu_quota_file)
            local = lqs[req.labels()["kueue.x-k8s.io/queue-name"]]
            assert cqs[local["spec"]["clusterQueue"]]["metadata"]["labels"]["mlplatform/airflow-pool"] == req.pool
        wpc = co.get_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "workloadpriorityclasses", "mlp-training-high")
        assert wpc["value"] == k8s.SchedulingV1Api(api).read_priority_class("mlp-training-high").value
        _set_ready(core, "h100-b", False)
        sync_gpu_pools(control_plane, airflow)
        cqs, _ = queues()
        assert (
            nominal(cqs["mlp-support-ml-h100"], "nvidia.com/gpu"),
            nominal(cqs["mlp-search-h100"], "nvidia.com/gpu"),
        ) == (3, 1)
    finally:
        _set_ready(core, "h100-b", True)
        sync_gpu_pools(control_plane, airflow)
        api.close()
    import subprocess
    import sys

    import yaml

    out = subprocess.run(  # what a GitOps repo would take: the same objects, printed
        [sys.executable, "-m", "mlplatform.cli", "gpu", "kueue"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    printed = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout) if d}
    assert ("ClusterQueue", "mlp-search-h100") in printed
    assert ("LocalQueue", "shared-a100") in printed
    broken = next(d for d in kueue_manifests(result.pools) if d["kind"] == "ClusterQueue")
    broken["spec"]["queueingStrategy"] = "Random"  # not one of Kueue's strategies
    with pytest.raises(ApiException) as err:
        apply_manifests(control_plane, [broken], dry_run=True)
    assert "queueingStrategy" in str(err.value.body)
    typo = next(d for d in kueue_manifests(result.pools) if d["kind"] == "LocalQueue")
    typo["spec"]["clusterQueues"] = typo["spec"].pop("clusterQueue")
    with pytest.raises(ApiException) as err:
        apply_manifests(control_plane, [typo], dry_run=True)
    assert "clusterQueues: field not declared in schema" in str(err.value.body)


def test_the_quota_file_never_promises_more_than_the_cluster_has(control_plane):
    from mlplatform.gpu.sync import read_cluster_inventory

    inv = read_cluster_inventory(control_plane, count_unusable=True)
    quota = load_quota(control_plane.gpu_quota_file)
    for profile, have in inv.allocatable.items():
        assert sum(shares.get(profile, 0) for shares in quota.values()) <= have, profile


def _gpu_use(core) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """H100s held by bound, unfinished pods, in all and per team label (what the API server records)."""
    use: dict[str, int] = {"all": 0}
    for pod in core.list_namespaced_pod("mlplatform").items:
        if not pod.spec.node_name or pod.status.phase not in ("Pending", "Running"):
            continue
        n = sum(int((c.resources.requests or {}).get("nvidia.com/gpu", 0)) for c in pod.spec.containers)
        team = (pod.metadata.labels or {}).get("mlplatform/team", "?")
        use["all"] += n
        use[team] = use.get(team, 0) + n
    return use


def _slots_in_use(airflow) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """pool_slots of the train tasks Airflow has started (queued, running, deferred), per pool."""
    states = ["queued", "running", "deferred"]
    data = airflow.request(
        "GET", "/dags/train_on_cluster/dagRuns/~/taskInstances", params={"state": states, "limit": 100}
    )
    use: dict[str, int] = {}
    for ti in data["task_instances"]:
        if ti["task_id"] == "train":
            use[ti["pool"]] = use.get(ti["pool"], 0) + ti["pool_slots"]
    return use


def test_contention_never_exceeds_the_gpus_nor_a_share_and_high_priority_goes_first(control_plane, core, airflow):
    """10 jobs of 2 H100s (6 from support-ml: 3 low then 3 high; 4 from search) on 8 H100s shared 6/2. The nodes
    are NotReady while the runs queue, so the pools are empty and the jobs wait in Airflow (no pod hangs
    Pending); when the nodes return, the pools grow and the jobs run."""
    import threading

    from mlplatform.gpu.sync import sync_gpu_pools

    airflow.wait_for_dag("train_on_cluster")
    for node in ("h100-a", "h100-b"):
        _set_ready(core, node, False)
    try:
        sync_gpu_pools(control_plane, airflow)
        assert _pools(airflow)["gpu_h100__support-ml"]["slots"] == 0
        airflow.unpause("train_on_cluster")
        runs = {}
        for i, (team, priority) in enumerate(
            [("support-ml", "low")] * 3 + [("support-ml", "high")] * 3 + [("search", "normal")] * 4
        ):
            conf = {"gpu_profile": "h100", "gpus": 2, "team": team, "priority": priority}
            runs[airflow.trigger("train_on_cluster", conf)] = (team, priority, i)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # every train task waits for its pool, none has a pod
            states = [airflow.task_states("train_on_cluster", r).get("train") for r in runs]
            if all(s == "scheduled" for s in states):
                break
            time.sleep(2)
        assert all(s == "scheduled" for s in states), states
        pods = core.list_namespaced_pod("mlplatform", label_selector="dag_id=train_on_cluster").items
        assert [p for p in pods if p.metadata.labels.get("run_id") in runs] == []
    finally:
        for node in ("h100-a", "h100-b"):
            _set_ready(core, node, True)

    peaks: dict[str, int] = {}
    over: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            k8s_use, af_use = _gpu_use(core), _slots_in_use(airflow)
            for key, value in [*(("k8s:" + k, v) for k, v in k8s_use.items()), *af_use.items()]:
                peaks[key] = max(peaks.get(key, 0), value)
            if k8s_use["all"] > 8 or k8s_use.get("support-ml", 0) > 6 or k8s_use.get("search", 0) > 2:
                over.append(f"k8s {k8s_use}")
            if af_use.get("gpu_h100__support-ml", 0) > 6 or af_use.get("gpu_h100__search", 0) > 2:
                over.append(f"airflow {af_use}")
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        sync_gpu_pools(control_plane, airflow)  # the nodes are back: 6 / 2
        finals = {r: airflow.wait_for_run("train_on_cluster", r, timeout=600) for r in runs}
    finally:
        stop.set()
        sampler.join()
    assert set(finals.values()) == {"success"}, finals
    assert not over, over[:5]
    assert peaks["k8s:all"] == 8  # the cluster was used to the full, and never beyond
    assert peaks["gpu_h100__support-ml"] == 6
    assert peaks["gpu_h100__search"] == 2
    starts = {}
    for run_id, (team, priority, _) in runs.items():
        ti = airflow.request("GET", f"/dags/train_on_cluster/dagRuns/{run_id}/taskInstances/train")
        starts[run_id] = (team, priority, ti["start_date"], ti["pool"], ti["pool_slots"], ti["priority_weight"])
    assert {(t, p, pool, slots) for t, p, _, pool, slots, _ in starts.values()} == {
        ("support-ml", "low", "gpu_h100__support-ml", 2),
        ("support-ml", "high", "gpu_h100__support-ml", 2),
        ("search", "normal", "gpu_h100__search", 2),
    }
    high = sorted(s[2] for s in starts.values() if s[1] == "high")
    low = sorted(s[2] for s in starts.values() if s[1] == "low")
    assert high[-1] < low[0], (high, low)  # queued together: every high job started before any low one
    print(f"contention: peaks {peaks}; starts {sorted(starts.values(), key=lambda s: s[2])}")


def test_a_run_shows_its_estimate_before_and_its_cost_after(control_plane, airflow):
    import subprocess
    import sys
    from datetime import UTC, datetime

    from mlplatform.gpu.cost import usage
    from mlplatform.gpu.sync import sync_gpu_pools

    since = datetime.now(UTC)
    sync_gpu_pools(control_plane, airflow)
    airflow.wait_for_dag("train_on_cluster")
    airflow.unpause("train_on_cluster")
    conf = {"gpu_profile": "mig_1g10gb", "gpus": 1, "team": "search", "max_steps": 900, "batch_size": 32}
    run_id = airflow.trigger("train_on_cluster", conf)
    assert airflow.wait_for_run("train_on_cluster", run_id, timeout=300) == "success"
    est = airflow.xcom("train_on_cluster", run_id, "check_gpu_ask")["estimate"]
    # 900 steps x 32 samples at the nominal 110 samples/s of a 1g.10gb slice (no measured run of it yet)
    assert est["throughput_source"].startswith("nominal")
    assert est["gpu_hours"] == pytest.approx(900 * 32 / 110 / 3600, abs=1e-4)
    assert est["usd"] == round(est["gpu_hours"] * 0.64, 2)
    (row,) = [r for r in usage(airflow, since) if r.run_id == run_id]
    assert (row.team, row.profile, row.gpus, row.pool) == ("search", "mig_1g10gb", 1, "gpu_mig_1g10gb__search")
    assert row.seconds > 0
    assert row.user == control_plane.airflow_admin
    assert row.estimate_usd == est["usd"]
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "gpu", "report", "--days", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert run_id in out.stdout
    assert "GPU use per team" in out.stdout
    assert "GPU use per user" in out.stdout


class _PodWatch:
    """Every version of the pods matching ``selector`` that the API server reports (a watch from a thread):
    what it recorded, and how many distinct pods it ever created."""

    def __init__(self, settings, selector: str) -> None:  # type: ignore[no-untyped-def]
        import threading

        from kubernetes import client as k8s
        from kubernetes import watch

        self.api = api_client(settings)
        self.core = k8s.CoreV1Api(self.api)
        self.watch = watch.Watch()
        self.selector = selector
        self.seen: dict[str, list[dict]] = {}  # uid -> the versions, in order
        self.ready = threading.Event()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    def _run(self) -> None:
        stream = self.watch.stream(
            self.core.list_namespaced_pod, "mlplatform", label_selector=self.selector, timeout_seconds=900
        )
        self.ready.set()
        try:
            for event in stream:
                pod = self.api.sanitize_for_serialization(event["object"])
                self.seen.setdefault(pod["metadata"]["uid"], []).append({"type": event["type"], **pod})
        except Exception:  # the stream cut by close()
            if not self.closed:
                raise

    def versions(self) -> list[list[dict]]:
        """Each pod's versions so far (a copy: the watch thread keeps adding)."""
        assert self.thread.is_alive() or self.closed, "the pod watch stopped"
        return [list(v) for v in list(self.seen.values())]

    def close(self) -> None:
        self.closed = True
        self.watch.stop()
        self.api.close()
        self.thread.join(10)


def test_ml_pipelines_train_step_runs_as_a_pod_on_a_simulated_h100(control_plane, airflow, stack, settings):
    """The cluster profile's own `ml_pipeline.train` (parsed from dags/ with MLP_PROFILE=cluster) for a run
    that asks for 2 H100s at high priority, run by Airflow itself (`airflow tasks test`: templates rendered,
    `conn.mlflow_default` and the snapshot's XCom resolved, deferred and resumed through a trigger) against the
    API server; the test reads the pod the API server recorded and finds none left behind."""
    import json
    import subprocess

    from mlplatform.stack.k8s import kubeconfig_path
    from mlplatform.stack.services import BIN, airflow_env

    airflow.wait_for_dag("ml_pipeline")
    was_paused = airflow.request("GET", "/dags/ml_pipeline")["is_paused"]
    airflow.request("PATCH", "/dags/ml_pipeline", json={"is_paused": True})  # the scheduler leaves the run be
    run_id = f"k8s-train-{uuid.uuid4().hex[:8]}"
    conf = {"gpu_profile": "h100", "gpus": 2, "team": "support-ml", "priority": "high", "epochs": 1, "max_steps": 5}
    watch = _PodWatch(control_plane, f"dag_id=ml_pipeline,run_id={run_id}")
    # `tasks test` runs the trigger in its own process; the stack's triggerer would pick the same trigger up
    # from the database and, when the task resumes here, take it for cancelled and delete the pod (on_kill)
    (triggerer,) = [svc for svc in stack.services if svc.name == "airflow-triggerer"]
    process.stop(stack.pid_file(triggerer))
    try:
        airflow.trigger("ml_pipeline", conf, run_id=run_id)
        snapshot_uri = f"s3://ml-artifacts/mlplatform/snapshots/{run_id}/training_set.parquet"
        airflow.request(
            "POST",
            f"/dags/ml_pipeline/dagRuns/{run_id}/taskInstances/training_snapshot/xcomEntries",
            json={"key": "return_value", "value": {"uri": snapshot_uri}},
        )
        env = {
            **airflow_env(settings),
            "MLP_PROFILE": "cluster",
            "MLP_ARTIFACT_ROOT": "s3://ml-artifacts/mlplatform",
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
                {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig_path(control_plane))}}
            ),
        }
        out = subprocess.run(
            [str(BIN / "airflow"), "tasks", "test", "ml_pipeline", "train", run_id],
            capture_output=True,
            text=True,
            env=env,
            cwd=settings.repo_root,
            check=False,
            timeout=600,
        )
        log = out.stdout + out.stderr
        assert out.returncode == 0, log[-4000:]
        assert "Marking task as SUCCESS" in log or "state=success" in log.lower(), log[-4000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(v[-1]["type"] == "DELETED" for v in watch.versions()):
            time.sleep(0.2)
    finally:
        watch.close()
        from kubernetes import client as k8s

        api = api_client(control_plane)  # a task killed by the timeout would leave its pod holding 2 H100s
        k8s.CoreV1Api(api).delete_collection_namespaced_pod(
            "mlplatform", label_selector=f"dag_id=ml_pipeline,run_id={run_id}", grace_period_seconds=0
        )
        api.close()
        airflow.request("DELETE", f"/dags/ml_pipeline/dagRuns/{run_id}")
        airflow.request("PATCH", "/dags/ml_pipeline", json={"is_paused": was_paused})
        stack.up(only=["airflow-triggerer"])
    assert len(watch.seen) == 1, list(watch.seen)  # one pod, and it was deleted when the task finished
    (versions,) = watch.seen.values()
    assert versions[-1]["type"] == "DELETED"
    placed = [v for v in versions if v["spec"].get("nodeName")]
    assert [v["status"]["phase"] for v in placed][-1] in ("Running", "Succeeded")
    pod = placed[-1]
    spec, main = pod["spec"], next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert spec["nodeName"] in ("h100-a", "h100-b")
    assert main["resources"]["limits"] == {"nvidia.com/gpu": "2", "cpu": "24", "memory": "192Gi"}
    assert main["resources"]["requests"] == main["resources"]["limits"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["priorityClassName"] == "mlp-training-high"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "mlp-train"
    assert main["command"] == ["torchrun"]
    args = main["args"]
    assert "--nproc-per-node=2" in args
    # the templates Airflow rendered: the snapshot's XCom, the mlflow_default connection, the run's params
    assert args[args.index("--data") + 1] == snapshot_uri
    assert args[args.index("--mlflow-tracking-uri") + 1].startswith(f"http://{settings.host}:{settings.mlflow_port}")
    assert args[args.index("--max-steps") + 1] == "5"
    assert args[args.index("--artifact-uri") + 1] == f"s3://ml-artifacts/mlplatform/runs/{run_id}"
    labels = pod["metadata"]["labels"]
    assert (labels["mlplatform/team"], labels["mlplatform/gpu-profile"]) == ("support-ml", "h100")
    assert labels["kueue.x-k8s.io/queue-name"] == "support-ml-h100"
    assert (labels["dag_id"], labels["task_id"], labels["run_id"]) == ("ml_pipeline", "train", run_id)
    env_vars = {e["name"]: e.get("value") for e in main["env"]}
    assert (env_vars["MLP_GPU_PROFILE"], env_vars["MLP_TEAM"], env_vars["MLP_PROFILE"]) == (
        "h100",
        "support-ml",
        "cluster",
    )
    assert any(c["name"] == "airflow-xcom-sidecar" for c in spec["containers"])  # the result comes back by XCom


def _task_runner(ti_id: str):  # type: ignore[no-untyped-def]
    """The process running one task instance's code (the task runner names itself after the TI's id)."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if " ".join(filter(None, proc.info["cmdline"] or [])) == f"airflow worker -- {ti_id}":  # setproctitle
            return proc
    return None


def test_a_worker_killed_mid_task_leaves_no_second_pod_when_the_task_retries(control_plane, core, airflow):
    """kill -9 of the task's process while it resumes after its pod Succeeded (and before it records that):
    the retry reattaches to the pod by its labels and finishes, instead of deleting it and training again.

    The process killed is the task runner (it names itself after the TI at start, before it parses the DAG);
    its supervisor reports the death at once, where a lost worker host would be found by the heartbeat
    timeout instead. What the retry does depends only on the pod it finds, which is the same in both cases."""
    from mlplatform.gpu.sync import sync_gpu_pools

    sync_gpu_pools(control_plane, airflow)
    airflow.wait_for_dag("train_on_cluster")
    airflow.unpause("train_on_cluster")
    run_id = f"kill-{uuid.uuid4().hex[:8]}"
    watch = _PodWatch(control_plane, f"dag_id=train_on_cluster,run_id={run_id}")
    try:
        conf = {"gpu_profile": "a100", "gpus": 1, "team": "search"}
        airflow.trigger("train_on_cluster", conf, run_id=run_id)
        ti_path = f"/dags/train_on_cluster/dagRuns/{run_id}/taskInstances/train"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the pod ran to Succeeded while its task waited deferred
            phases = [v[-1]["status"].get("phase") for v in watch.versions()]
            if phases == ["Succeeded"]:
                break
            time.sleep(0.05)
        assert phases == ["Succeeded"], phases
        ti_id = airflow.request("GET", ti_path)["id"]
        victim = None
        while time.monotonic() < deadline and victim is None:  # try 1 resumes on a worker to finish up
            victim = _task_runner(ti_id)
            time.sleep(0.02)
        assert victim is not None, "the task never resumed"
        victim.kill()  # kill -9 (SIGKILL), before it could record the pod's success (or delete it)
        assert [v[-1]["type"] for v in watch.versions()] != ["DELETED"], "killed too late: the pod was gone"
        assert airflow.wait_for_run("train_on_cluster", run_id, timeout=300) == "success"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and [v[-1]["type"] for v in watch.versions()] != ["DELETED"]:
            time.sleep(0.2)
    finally:
        watch.close()
    ti = airflow.request("GET", ti_path)
    assert ti["try_number"] == 2, ti  # the kill failed try 1; try 2 finished the task
    assert len(watch.seen) == 1, [v[-1]["metadata"]["name"] for v in watch.seen.values()]  # no second pod
    (versions,) = watch.seen.values()
    assert versions[-1]["type"] == "DELETED"  # and none left behind
    # labelled before the delete: had the delete failed, a later clear would train afresh, not reattach
    assert versions[-1]["metadata"]["labels"]["already_checked"] == "True"
    assert versions[-1]["metadata"]["labels"]["try_number"] == "1"  # the pod try 1 started
    assert core.list_namespaced_pod("mlplatform", label_selector=f"run_id={run_id}").items == []
