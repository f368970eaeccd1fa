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
