"""
### ml_pipeline: Kafka to a deployed model, in one run

Support-ticket escalation, end to end:

`check_conf` → `produce` (synthetic events to Kafka, through the Schema Registry) → `ingest_<topic>`
(exactly-once landing; each holds its topic's lane pool, shared with `ingest_events`, so the two never land
the same range) → `validate_<topic>` (Great Expectations over every landed range not yet validated,
whichever DAG landed it; a failure stops the run) →
`build_features` (PySpark via SparkSubmitOperator) → `publish_features` (`feast apply` + materialize to
Redis) → `training_snapshot` (point-in-time training set from Feast) → `train` (local launcher, or a GPU
pod through KubernetesPodOperator on the cluster profile) → `register` (MLflow; the challenger and the
champion scored on the same held-out evaluation set) → `route` → `approve` (a person, when
`require_approval`) → `promote` (alias `champion`, in the audit trail) → `deploy` (the model server
follows `models:/ticket_escalation@champion`; smoke test).

Trigger from the form, or: `airflow dags trigger ml_pipeline --conf '{"events": 5000}'`.
A bad conf fails the run at `check_conf` with the field named.

It emits only the `served` Asset: the per-stage DAGs (`ingest_events` → `validate_landing` →
`build_features` → `train_model` → `deploy_model`, chained by Assets, paused at creation) are the
incremental path, and a run of this DAG must not set them off a second time.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, dag, get_current_context, task

from mlplatform.config.settings import get_settings
from mlplatform.pipeline import assets
from mlplatform.pipeline.links import data_docs_task
from mlplatform.pipeline.params import param_specs
from mlplatform.pipeline.promotion import gate_to_champion
from mlplatform.pipeline.stages import spark_submit_kwargs
from mlplatform.pipeline.tasks import lane_pool

S = get_settings()


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "pipeline", "support-escalation"],
    params={name: Param(**spec) for name, spec in param_specs().items()},
    doc_md=__doc__,
)
def ml_pipeline() -> None:
    @task
    def check_conf() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from mlplatform.gpu.quota import GpuQuotaError
        from mlplatform.pipeline.checks import check_run_conf
        from mlplatform.pipeline.params import ConfError

        try:
            return check_run_conf(dict(get_current_context()["params"]))
        except (ConfError, GpuQuotaError) as exc:  # a retry cannot fix a bad conf: fail now
            raise AirflowFailException(str(exc)) from exc

    @task
    def produce(run_conf: dict) -> dict:
        from mlplatform.pipeline.endpoints import from_airflow
        from mlplatform.pipeline.stages import produce_events

        if not run_conf["produce"]:
            return {"tickets": 0, "outcomes": 0}
        knobs = {k: run_conf[k] for k in ("schema_version", "poison_rate", "late_rate", "drift")}
        return produce_events(run_conf["events"], run_conf["seed"], endpoints=from_airflow(), **knobs)

    @task
    def ingest(topic: str, run_conf: dict) -> dict:
        from mlplatform.pipeline.tasks import ingest as run

        return run(topic, run_conf, get_current_context()["run_id"])

    @data_docs_task
    def validate(topic: str) -> dict:
        from mlplatform.pipeline.tasks import validate as run

        return run(topic, get_current_context()["run_id"])

    build_features = SparkSubmitOperator(task_id="build_features", **spark_submit_kwargs(S))

    @task
    def publish_features() -> dict:
        from mlplatform.pipeline.stages import publish_features as publish

        return publish()

    @task
    def training_snapshot(run_conf: dict) -> dict:
        from mlplatform.pipeline.stages import training_snapshot as snapshot

        return snapshot(get_current_context()["run_id"], holdout_days=run_conf["holdout_days"])

    @task(pool="cpu_train" if S.train_device != "cuda" else S.gpu_pool, retries=1)
    def train(snapshot: dict, run_conf: dict) -> dict:
        from mlplatform.pipeline.stages import train_local

        return train_local(snapshot, get_current_context()["run_id"], run_conf)

    @task
    def register(result: dict, snapshot: dict, run_conf: dict) -> dict:
        from mlplatform.pipeline.stages import register as do_register

        return do_register(result, snapshot, min_delta=run_conf["min_delta"])

    @task(outlets=[Asset(assets.SERVED)], trigger_rule="none_failed")
    def deploy(run_conf: dict) -> dict:
        from mlplatform.pipeline.tasks import deploy as do_deploy

        return do_deploy() if run_conf["deploy"] else {"skipped": True}

    run_conf = check_conf()
    produced = produce(run_conf)
    snapshot = training_snapshot(run_conf)
    for topic in (S.tickets_topic, S.outcomes_topic):
        slug = topic.replace(".", "_")
        landed = ingest.override(task_id=f"ingest_{slug}", pool=lane_pool(topic))(topic, run_conf)
        produced >> landed >> validate.override(task_id=f"validate_{slug}")(topic) >> build_features
    build_features >> publish_features() >> snapshot
    if S.profile == "cluster":  # a GPU pod: pool = the team's GPU share, pool_slots = GPUs, both per run
        from mlplatform.launch.gpu_pod import GpuPodOperator
        from mlplatform.launch.pods import training_pod_kwargs

        trained = GpuPodOperator(
            **training_pod_kwargs(
                task_id="train",
                gpus=S.train_gpus,
                profile=S.gpu_profile,
                overrides=pod_overrides(),
                get_logs=S.pod_logs,
            ),
            do_xcom_push=True,  # the pod's result file (the MLflow run it logged) is `register`'s input
        )
        snapshot >> trained
    else:
        trained = train(snapshot, run_conf)
    gate_to_champion(register(trained, snapshot, run_conf)) >> deploy(run_conf)


def pod_overrides() -> dict:
    pull = "{{ ti.xcom_pull(task_ids='training_snapshot')"
    return {
        "data": pull + "['uri'] }}",
        "dataset_uri": pull + "['uri'] }}",
        "feature_service": S.feature_service,
        "epochs": "{{ params.epochs }}",
        "max_steps": "{{ params.max_steps }}",
        "mlflow_tracking_uri": "{{ conn.mlflow_default.get_uri() }}",
        "experiment": S.model_name,
        "result_file": "/airflow/xcom/return.json",
        # checkpoints and the model mirrored to the object store: a pod rescheduled onto another node resumes
        **({"artifact_uri": S.artifact_root.rstrip("/") + "/runs/{{ run_id }}"} if S.artifact_root else {}),
    }


ml_pipeline()
