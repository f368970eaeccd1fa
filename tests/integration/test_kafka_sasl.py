"""Kafka with SASL/SCRAM: the local broker started with it (`MLP_KAFKA_SASL=1 mlp up` runs the same service),
refusing clients without the right credentials, and the pipeline's ingestion reading it with credentials that
come only from an Airflow connection (login and password fields), none from the settings."""

from __future__ import annotations

import json
import os

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from mlplatform.config.settings import ensure_secrets
from mlplatform.pipeline import endpoints
from mlplatform.pipeline.stages import ingest_topic
from mlplatform.stack import process
from mlplatform.stack.services import _kafka, wait_healthy

from .lanes import make_lane


@pytest.fixture(scope="module")
def sasl_settings(stack, settings, tmp_path_factory):
    """A second broker, SASL/SCRAM-SHA-512 only, on ports and a state dir of its own (the stack's registry)."""
    home = tmp_path_factory.mktemp("sasl-kafka")
    s = settings.model_copy(
        update={
            "home": home,
            "kafka_port": process.free_port(),
            "kafka_controller_port": process.free_port(),
            "kafka_sasl": True,
        }
    )
    svc = _kafka(s)
    assert svc.prepare is not None
    assert svc.after_start is not None
    svc.prepare()
    props = (home / "kafka" / "server.properties").read_text()
    assert "SASL_PLAINTEXT://" in props
    assert "PLAINTEXT://" not in props.replace("SASL_PLAINTEXT://", "")
    pid_file, log_file = home / "kafka.pid", home / "kafka.log"
    rec = process.spawn(svc.argv(), pid_file=pid_file, log_file=log_file, env=dict(os.environ))
    try:
        wait_healthy(svc, rec.alive, log_file)  # the health check logs in with the generated credentials
        svc.after_start()
        yield s
    finally:
        process.stop(pid_file)


def _refused(conf: dict) -> bool:
    try:
        AdminClient({**conf, "socket.timeout.ms": 3000, "log_level": 0}).list_topics(timeout=6)
    except KafkaException:
        return True
    return False


def test_the_broker_refuses_clients_without_the_right_credentials(sasl_settings):
    s = sasl_settings
    assert _refused({"bootstrap.servers": s.kafka_bootstrap})
    wrong = ensure_secrets(s.home)["kafka_password"][::-1]  # the right length, the wrong value
    assert _refused({**s.kafka_client(), "sasl.password": wrong})
    assert not _refused(s.kafka_client())


def test_ingestion_logs_in_with_credentials_from_the_airflow_connection_only(
    sasl_settings, settings, tmp_path, monkeypatch
):
    s = sasl_settings
    lane = make_lane(s, tmp_path)  # the test's own producer logs in with the broker's credentials
    lane.produce(lane.tickets(300, seed=17))

    password = ensure_secrets(s.home)["kafka_password"]
    kafka_conn = {
        "conn_type": "kafka",
        "login": s.kafka_user,
        "password": password,
        "extra": {
            "bootstrap.servers": s.kafka_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "group.id": "not-used-by-ingestion",
        },
    }
    registry_conn = {
        "conn_type": "http",
        "host": settings.host,
        "port": settings.schema_registry_port,
        "schema": "http",
        "extra": {"path": "/apis/ccompat/v7"},
    }
    # Airflow's own environment-variable secrets backend: what a deployment's connection store gives a task
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_SASL_IT", json.dumps(kafka_conn))
    monkeypatch.setenv("AIRFLOW_CONN_REGISTRY_SASL_IT", json.dumps(registry_conn))
    ep = endpoints.from_airflow("kafka_sasl_it", "registry_sasl_it")
    assert (ep.kafka["sasl.username"], ep.kafka["sasl.password"]) == (s.kafka_user, password)
    assert "group.id" not in ep.kafka

    knows_nothing = settings.model_copy(update={"home": tmp_path / "no-secrets", "kafka_sasl": False})
    assert "sasl.password" not in knows_nothing.kafka_client()
    result = ingest_topic(
        lane.topic,
        "run-sasl",
        s=knows_nothing,
        endpoints=ep,
        group=lane.group,
        landing=s.landing_root,
        schema_dir=lane.schema_dir,
        chunk_records=2_000,
    )
    assert (result["records"], result["dead_lettered"], result["lag"]) == (300, 0, 0)
    assert lane.assert_exactly_once() == {"on_topic": 300, "landed": 300, "dead_lettered": 0}
