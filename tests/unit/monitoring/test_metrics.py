"""The project's metric pushes: names are declared once, a run's gauges form one group keyed by stage, DAG and
topic, and a gateway that cannot be reached never fails the task. The live path (pushgateway, Prometheus
scraping it) is covered by tests/integration/test_stack.py and the pipeline e2e test."""

from __future__ import annotations

import socket

import pytest

from mlplatform.config.settings import Settings
from mlplatform.monitoring import metrics


def test_an_undeclared_metric_is_refused():
    with pytest.raises(KeyError, match="mlp_nope"):
        metrics.Push("ingest").set("mlp_nope", 1)


def test_the_group_carries_stage_topic_and_the_airflow_dag(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "ml_pipeline")
    push = metrics.Push("ingest", {"topic": "support.tickets"})
    assert push.grouping() == {"stage": "ingest", "topic": "support.tickets", "dag_id": "ml_pipeline"}
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID")
    assert "dag_id" not in push.grouping()


def test_an_unreachable_gateway_is_logged_not_raised(tmp_path, caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = Settings(home=tmp_path, pushgateway_port=port)
    assert metrics.ingest_pushed({"topic": "t", "records": 3, "lag": 0, "seconds": 1.0, "dead_by_kind": {}}, s) is False
    assert "not pushed" in caplog.text
