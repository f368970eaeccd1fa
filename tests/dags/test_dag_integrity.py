"""DAG integrity and policy: no import errors; tags, retries, owner, Params and docs on every DAG; nothing
heavy imported at parse time (the parse time itself is measured by bench/dag_parse.py); the cluster profile
renders a GPU pod."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py"))
HEAVY_MODULES = ["torch", "pandas", "pyspark", "feast", "mlflow", "great_expectations", "transformers"]
# every DAG file is a DAG whose knobs are Params (triggerable from the form or with --conf)
DAGS_WITH_PARAMS = [p.stem for p in DAG_FILES]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) == len(DAG_FILES)


def test_every_dag_follows_the_house_policy(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert "mlplatform" in (dag.tags or []), dag_id
        assert len(dag.doc_md or "") > 80, dag_id
        assert dag.catchup is False, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, (dag_id, task.task_id)
            assert task.owner == "support-ml", (dag_id, task.task_id)
        assert Path(dag.fileloc).stem == dag_id, "function name = dag_id = file name"


@pytest.mark.parametrize("dag_id", DAGS_WITH_PARAMS)
def test_dags_with_knobs_have_params(dagbag, dag_id):
    assert len(dagbag.dags[dag_id].params) > 0, dag_id


def test_every_param_is_documented_typed_and_its_default_validates(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            assert (param.description or "").strip(), (dag_id, name, "no description")
            assert param.schema.get("type"), (dag_id, name, "no JSON-schema type")
        # resolves every Param against its schema; raises ParamValidationError naming the bad one
        resolved = copy.deepcopy(dag.params).validate()
        assert resolved == {name: dag.params.get_param(name).value for name in dag.params}, dag_id


def test_ml_pipeline_params_validate_and_name_bad_fields(dagbag):
    dag = dagbag.dags["ml_pipeline"]
    good = copy.deepcopy(dag.params)
    good["events"] = 5000
    assert good.validate()["events"] == 5000
    bad = copy.deepcopy(dag.params)
    with pytest.raises(Exception, match="events"):  # resolving the Param validates it
        bad["events"] = "lots"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_module_is_imported_at_parse_time(path):
    """Parse each file in a fresh interpreter (Airflow already imported) and list the heavy modules loaded."""
    code = (
        "import importlib.util, json, sys, airflow.sdk, mlplatform.config.settings\n"
        "from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, f"{path.name} failed to parse:\n{out.stderr[-3000:]}"
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], f"{path.name} imports heavy modules at parse time: {heavy}"


def test_cluster_profile_trains_in_a_gpu_pod():
    """With MLP_PROFILE=cluster the train task is a KubernetesPodOperator; check its rendered pod."""
    code = """
import json
from airflow.dag_processing.dagbag import DagBag
db = DagBag('dags')
assert not db.import_errors, db.import_errors
t = db.dags['ml_pipeline'].get_task('train')
pod = t.build_pod_request_obj(dry_run=True)
c = pod.spec.containers[0]
print(json.dumps({
  'type': type(t).__name__, 'pool': t.pool, 'pool_slots': t.pool_slots,
  'limits': c.resources.limits, 'requests': c.resources.requests,
  'node_selector': pod.spec.node_selector,
  'tolerations': [tol.to_dict() for tol in pod.spec.tolerations],
  'cmd': c.command, 'args': c.args, 'image': c.image,
}))
"""
    env = {
        **__import__("os").environ,
        "MLP_PROFILE": "cluster",
        "MLP_TRAIN_GPUS": "2",
        "MLP_GPU_PROFILE": "h100",
        "MLP_ARTIFACT_ROOT": "s3://ml-artifacts/mlplatform",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    spec = json.loads(out.stdout.strip().splitlines()[-1])
    assert spec["type"] == "GpuPodOperator"  # a KubernetesPodOperator that applies each run's GPU ask
    assert spec["pool"] == "gpu_h100__support-ml"  # the default team's share; a run's conf re-routes it
    assert spec["pool_slots"] == 2
    assert spec["limits"]["nvidia.com/gpu"] == "2"
    assert spec["requests"]["nvidia.com/gpu"] == "2"
    assert spec["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}.items() <= {
        k: v for k, v in spec["tolerations"][0].items() if v is not None
    }.items()
    assert spec["cmd"] == ["torchrun"]
    assert "--nproc-per-node=2" in spec["args"]
    assert "training" in spec["args"]
    # the snapshot comes from training_snapshot's URI (an s3:// one with an artifact root), checkpoints go there
    args = spec["args"]
    assert args[args.index("--data") + 1] == "{{ ti.xcom_pull(task_ids='training_snapshot')['uri'] }}"
    assert args[args.index("--artifact-uri") + 1] == "s3://ml-artifacts/mlplatform/runs/{{ run_id }}"


def _rendered(dag, task_id: str, field: str, params: dict):  # type: ignore[no-untyped-def]
    """A task's templated field as it renders for a run with ``params`` (the DAG's defaults overridden)."""
    task = dag.get_task(task_id)
    resolved = copy.deepcopy(dag.params)
    for name, value in params.items():
        resolved[name] = value
    return task.render_template(getattr(task, field), {"params": resolved.validate()})


@pytest.mark.parametrize("full", [True, False])
def test_build_features_full_recompute_param_reaches_the_spark_job(dagbag, full):
    import importlib.util

    spec = importlib.util.spec_from_file_location("customer_features", ROOT / "spark_jobs" / "customer_features.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    args = _rendered(
        dagbag.dags["build_features"], "spark_customer_features", "application_args", {"full_recompute": full}
    )
    assert job.parse_args(args).full is full
    assert job.parse_args(args[:-1]).full is False  # without the flag: incremental
    with pytest.raises(SystemExit):
        job.parse_args([*args[:-1], "--full=perhaps"])


def test_validate_landing_topics_param_is_checked(dagbag):
    dag = dagbag.dags["validate_landing"]
    assert len(copy.deepcopy(dag.params).validate()["topics"]) == 2
    bad = copy.deepcopy(dag.params)
    with pytest.raises(Exception, match="topics"):
        bad["topics"] = ["not-a-contract-topic"]
