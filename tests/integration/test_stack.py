from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx

from mlplatform.gpu.inventory import local_gpus
from mlplatform.stack.airflow_api import AirflowClient


def test_every_service_is_healthy_and_status_says_so(stack):
    rows = stack.status()
    assert {r.name for r in rows} >= {
        "postgres",
        "redis",
        "kafka",
        "schema-registry",
        "mlflow",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    assert all(r.healthy for r in rows), rows
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "status"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("healthy") >= 9


def test_up_again_is_idempotent(stack):
    before = {r.name: r.pid for r in stack.status()}
    stack.up()
    assert {r.name: r.pid for r in stack.status()} == before


def test_airflow_requires_login_and_has_provisioned_settings(stack, settings):
    assert httpx.get(f"{settings.airflow_url}/api/v2/pools", timeout=10).status_code == 401
    client = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    pools = {p["name"]: p["slots"] for p in client.request("GET", "/pools")["pools"]}
    assert pools["gpu_local"] == len(local_gpus())  # sized from NVML; 0 on a CPU machine
    assert pools["cpu_train"] == 1
    # one lane per ingested topic: a backlog on one topic never holds the other's ingestion
    assert pools[f"ingest_{settings.tickets_topic}"] == 1
    assert pools[f"ingest_{settings.outcomes_topic}"] == 1
    conns = {c["connection_id"] for c in client.request("GET", "/connections")["connections"]}
    assert {"kafka_default", "spark_default", "mlflow_default", "postgres_default", "redis_default"} <= conns
    assert {"schema_registry_default", "kafka_watch"} <= conns
    variables = {v["key"] for v in client.request("GET", "/variables")["variables"]}
    assert "mlp_model_name" in variables


def test_port_in_use_fails_naming_port_and_process(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        env = {**os.environ, "MLP_HOME": str(tmp_path / "home"), "MLP_POSTGRES_PORT": str(port)}
        out = subprocess.run(
            [sys.executable, "-m", "mlplatform.cli", "up"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
    finally:
        holder.close()
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 1, text
    assert f"port {port}" in text
    assert f"pid {os.getpid()}" in text
    assert "MLP_POSTGRES_PORT" in text


def _bare_airflow(settings, *args: str, source_env_file: bool = False) -> subprocess.CompletedProcess[str]:
    """The venv's plain `airflow` binary in an environment that has none of the stack's variables: only
    AIRFLOW_HOME (or only what the env file `mlp up` wrote exports), as a user's fresh shell would."""
    from mlplatform.stack.services import BIN, airflow_cli_env_file

    clean = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    if source_env_file:
        argv = ["bash", "-c", f'source "{airflow_cli_env_file(settings)}" && exec airflow "$@"', "airflow", *args]
    else:
        clean["AIRFLOW_HOME"] = str(settings.home / "airflow")
        argv = [str(BIN / "airflow"), *args]
    return subprocess.run(argv, env=clean, capture_output=True, text=True, check=False, timeout=180)  # noqa: S603


def _json_table(stdout: str) -> list[dict]:
    """The ``-o json`` table of an airflow command (Airflow's own warnings may precede it on stdout)."""
    import json

    start = next(i for i, line in enumerate(stdout.splitlines()) if line.startswith("[{") or line == "[]")
    return json.loads("\n".join(stdout.splitlines()[start:]))


def test_the_plain_airflow_cli_talks_to_the_running_stack(stack, settings):
    """`export AIRFLOW_HOME=<state>/airflow; airflow ...` works with nothing else set: the database, the DAGs and
    the pools are the running stack's, and `airflow dags trigger --conf` starts a real run whose Params apply."""
    import json

    from mlplatform.stack.services import airflow_cli_env_file

    assert oct(airflow_cli_env_file(settings).stat().st_mode & 0o777) == "0o600"  # it carries the DB password
    assert oct((settings.home / "airflow" / "airflow.cfg").stat().st_mode & 0o777) == "0o600"

    listed = _bare_airflow(settings, "dags", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert {"ml_pipeline", "validate_landing", "deploy_model"} <= {d["dag_id"] for d in _json_table(listed.stdout)}

    pools = _bare_airflow(settings, "pools", "list", "-o", "json", source_env_file=True)
    assert pools.returncode == 0, pools.stderr[-3000:]
    assert f"ingest_{settings.tickets_topic}" in {p["pool"] for p in _json_table(pools.stdout)}

    bad = _bare_airflow(settings, "dags", "trigger", "validate_landing", "--conf", '{"topics": ["no.such.topic"]}')
    assert bad.returncode != 0
    assert "topics" in bad.stdout + bad.stderr

    run_id = f"plain-cli-{os.getpid()}-{int(__import__('time').time())}"
    conf = json.dumps({"topics": [settings.tickets_topic]})
    done = _bare_airflow(settings, "dags", "trigger", "validate_landing", "--run-id", run_id, "--conf", conf)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    run = client.request("GET", f"/dags/validate_landing/dagRuns/{run_id}")
    assert run["conf"] == {"topics": [settings.tickets_topic]}
    assert client.wait_for_run("validate_landing", run_id, timeout=600) == "success"
    assert not [t for t in client.unfinished() if run_id in t]  # what a stuck run's error lists: unfinished only
    # the Param decided the fan-out: one mapped validation, for the tickets topic only
    mapped = client.request("GET", f"/dags/validate_landing/dagRuns/{run_id}/taskInstances/validate/listMapped")
    assert mapped["total_entries"] == 1


def test_prometheus_scrapes_airflow_over_statsd_and_what_tasks_push(stack, settings):
    """Both paths into the stack's Prometheus, live: Airflow's scheduler gauges (StatsD → statsd exporter) and a
    stage's push (prometheus-client → Pushgateway), with their labels."""
    import time
    import uuid

    from mlplatform.monitoring import metrics

    topic = f"it.metrics.{uuid.uuid4().hex[:8]}"
    assert metrics.ingest_pushed(
        {"topic": topic, "records": 42, "lag": 7, "seconds": 1.5, "dead_by_kind": {"bad_magic": 2}}, settings
    )
    wanted = {
        f'mlp_ingest_landed_records{{topic="{topic}",stage="ingest"}}': 42.0,
        f'mlp_ingest_dead_lettered_records{{topic="{topic}",reason="bad_magic"}}': 2.0,
        # the scheduler reports every pool every few seconds (one series each)
        'count(airflow_pool_open_slots{pool_name="cpu_train"})': 1.0,
    }
    seen: dict[str, list[float]] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen = {q: [float(r["value"][1]) for r in metrics.query(settings, q)] for q in wanted}
        if all(seen[q] == [v] for q, v in wanted.items()):
            break
        time.sleep(3)
    assert all(seen[q] == [v] for q, v in wanted.items()), seen
    targets = httpx.get(f"{settings.prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    assert health["airflow"] == health["pushgateway"] == health["prometheus"] == "up", health


def test_the_gpu_quota_api_reports_every_pool_with_its_source_and_needs_a_token(stack, settings):
    client = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    url = f"{settings.airflow_url}/gpu-quota/api/pools"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=10).status_code in (401, 403)
    doc = httpx.get(url, headers=client._headers(), timeout=30).json()
    by_name = {p["name"]: p for p in doc["pools"]}
    assert set(by_name) == {p["name"] for p in client.request("GET", "/pools")["pools"]}
    gpu = by_name["gpu_local"]
    assert gpu["gpu"] is True
    assert gpu["slots"] == len(local_gpus())
    assert "NVML" in gpu["source"]
    assert doc["pools"][0]["gpu"] is True  # GPU pools first
    assert isinstance(doc["gpu_hours"], dict)
