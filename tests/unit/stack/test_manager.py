from __future__ import annotations

import json

from mlplatform.gpu.inventory import local_gpus
from mlplatform.stack.manager import Stack


def test_airflow_settings_are_rendered_with_no_placeholder_left(settings):
    doc = Stack(settings).render_airflow_settings()
    text = json.dumps(doc)
    assert "${" not in text
    conns = {c["conn_id"]: c for c in doc["connections"]}
    assert conns["kafka_default"]["conn_extra"]["bootstrap.servers"] == settings.kafka_bootstrap
    assert conns["spark_default"]["conn_host"] == "local[*]"
    pools = {p["pool_name"]: p["pool_slot"] for p in doc["pools"]}
    # sized from NVML ("nvml" in airflow_settings.yaml): one slot per local GPU, 0 on a machine without one
    assert pools["gpu_local"] == len(local_gpus())
    assert pools["cpu_train"] == 1


def test_services_start_dependencies_first(settings):
    names = [s.name for s in Stack(settings).services]
    assert names.index("postgres") < names.index("mlflow") < names.index("airflow-api-server")
    assert names.index("airflow-api-server") < names.index("airflow-scheduler")


def test_the_spark_cluster_is_optional_and_when_enabled_spark_default_points_at_it(settings):
    stack = Stack(settings)
    optional = {s.name for s in stack.services if s.optional}
    assert optional == {"spark-master", "spark-worker", "s3", "etcd", "kube-apiserver", "kube-scheduler", "kwok"}
    assert not any(s.wanted() for s in stack.services if s.optional)  # a plain `mlp up` starts none of them
    names = [s.name for s in stack.services]
    assert names.index("spark-master") < names.index("spark-worker") < names.index("airflow-api-server")
    on = settings.model_copy(update={"spark_cluster": True, "spark_master_port": 17077})
    conns = {c["conn_id"]: c for c in Stack(on).render_airflow_settings()["connections"]}
    assert conns["spark_default"]["conn_host"] == f"spark://{on.host}:17077"
    worker = next(s for s in Stack(on).services if s.name == "spark-worker")
    argv = worker.argv()
    assert argv[1:3] == ["org.apache.spark.deploy.worker.Worker", f"spark://{on.host}:17077"]
    assert argv[argv.index("--cores") + 1] == str(on.spark_worker_cores)


def test_status_leaves_out_an_optional_service_nobody_asked_for(settings, tmp_path):
    s = settings.model_copy(update={"home": tmp_path})
    assert "spark-master" not in {r.name for r in Stack(s).status()}
    enabled = s.model_copy(update={"spark_cluster": True})
    assert {"spark-master", "spark-worker"} <= {r.name for r in Stack(enabled).status()}


def test_the_control_plane_is_optional_starts_in_dependency_order_and_reads_the_cached_binaries(settings, tmp_path):
    from mlplatform.stack.k8s import K8S_SERVICES, k8s_bin_dir

    s = settings.model_copy(update={"home": tmp_path, "k8s": True, "k8s_api_port": 46443})
    names = [svc.name for svc in Stack(s).services]
    assert [n for n in names if n in K8S_SERVICES] == list(K8S_SERVICES)  # etcd, apiserver, scheduler, kwok
    assert set(K8S_SERVICES) <= {r.name for r in Stack(s).status()}
    apiserver = Stack(s).service("kube-apiserver").argv()
    assert apiserver[0] == str(k8s_bin_dir(s) / "kube-apiserver")
    assert "--secure-port=46443" in apiserver
    assert "--authorization-mode=RBAC" in apiserver
    assert all(
        a.split("=")[1].startswith(("127.", "10.96.")) for a in apiserver if a.startswith(("--bind", "--service-c"))
    )


def test_with_s3_the_stack_runs_moto_and_mlflow_stores_its_artifacts_in_the_bucket(settings):
    on = settings.model_copy(update={"s3": True, "s3_port": 19300})
    services = {s.name: s for s in Stack(on).services}
    assert services["s3"].wanted()
    assert not services["spark-master"].wanted()
    assert services["s3"].argv()[-4:] == ["-H", on.host, "-p", "19300"]
    mlflow = services["mlflow"]
    argv = mlflow.argv()
    assert argv[argv.index("--artifacts-destination") + 1] == f"s3://{on.s3_bucket}/mlflow"
    assert mlflow.env()["MLFLOW_S3_ENDPOINT_URL"] == f"http://{on.host}:19300"
    names = list(services)
    assert names.index("s3") < names.index("mlflow")  # the bucket exists before MLflow writes to it


def test_with_sasl_every_kafka_connection_carries_the_login(settings, tmp_path):
    on = settings.model_copy(update={"kafka_sasl": True, "home": tmp_path})
    conns = {c["conn_id"]: c for c in Stack(on).render_airflow_settings()["connections"]}
    kafka = [c for c in conns.values() if c["conn_type"] == "kafka"]
    assert {c["conn_id"] for c in kafka} >= {"kafka_default", "kafka_watch"}
    for conn in kafka:
        extra = conn["conn_extra"]
        assert extra["security.protocol"] == "SASL_PLAINTEXT"
        assert extra["sasl.username"] == on.kafka_user
        assert extra["sasl.password"] == on.kafka_client()["sasl.password"]
    assert conns["kafka_watch"]["conn_extra"]["group.id"] == on.watch_group  # the rest is kept
    plain = {c["conn_id"]: c for c in Stack(settings).render_airflow_settings()["connections"]}
    assert "sasl.password" not in plain["kafka_default"]["conn_extra"]
