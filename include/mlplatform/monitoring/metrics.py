"""The project's own metrics, through prometheus-client. Pipeline stages run in short-lived task processes, so
each run pushes what it did to the stack's Pushgateway (Prometheus' answer for batch jobs), grouped by stage,
DAG and topic or view: the group's series are the latest run's. Prometheus scrapes the gateway with
``honor_labels``, so the grouping labels (``stage``, ``dag_id``, ``topic``, ...) are kept.

Airflow's own metrics (pool occupancy, queued and running slots, task durations) come over StatsD through the
statsd exporter; the model server serves its own ``/metrics``. A metrics outage never fails a task: a push
that cannot reach the gateway is logged and dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlplatform.config.settings import Settings, get_settings

log = logging.getLogger(__name__)

# name -> help: one help text per name, as the Pushgateway requires across groups
HELP = {
    "mlp_ingest_landed_records": "Records the latest ingest run of a topic landed (all its attempts)",
    "mlp_ingest_dead_lettered_records": "Records the latest ingest run sent to the topic's DLQ, by reason",
    "mlp_ingest_lag_records": "Records still behind the ingestion group when the latest run ended",
    "mlp_ingest_seconds": "Wall time of the latest ingest run of a topic",
    "mlp_validation_passed": "1 when the latest validated batch of a topic passed its suite, 0 when it failed",
    "mlp_validation_rows": "Rows in the latest validated batch of a topic",
    "mlp_validation_failed_expectations": "Expectations the latest batch of a topic failed",
    "mlp_feast_materialized_rows": "Rows the latest materialization wrote to the online store, by feature view",
    "mlp_training_samples_per_second": "Training throughput of the latest run",
    "mlp_training_gpu_utilization_percent": "Mean GPU utilisation (NVML, via MLflow system metrics) of the latest run",
    "mlp_last_push_timestamp_seconds": "When the stage last pushed its metrics",
}


@dataclass
class Push:
    """The gauges of one stage run, pushed as one group."""

    stage: str
    group: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def set(self, name: str, value: float, **labels: str) -> Push:
        if name not in HELP:
            raise KeyError(f"unknown metric {name!r}: add it to mlplatform.monitoring.metrics.HELP")
        self.samples.append((name, labels, float(value)))
        return self

    def grouping(self) -> dict[str, str]:
        key = {"stage": self.stage, **self.group}
        dag_id = os.environ.get("AIRFLOW_CTX_DAG_ID")  # set by Airflow in every task process
        if dag_id:
            key["dag_id"] = dag_id
        return key

    def send(self, s: Settings | None = None, timeout: float = 3.0) -> bool:
        """Push to the gateway (replacing the group's previous run); False, logged, when it cannot."""
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

        s = s or get_settings()
        registry = CollectorRegistry()
        gauges: dict[str, Gauge] = {}
        for name, labels, value in self.samples:
            gauge = gauges.get(name)
            if gauge is None:
                gauge = gauges[name] = Gauge(name, HELP[name], sorted(labels), registry=registry)
            (gauge.labels(**labels) if labels else gauge).set(value)
        last = Gauge("mlp_last_push_timestamp_seconds", HELP["mlp_last_push_timestamp_seconds"], registry=registry)
        last.set_to_current_time()
        try:
            push_to_gateway(
                s.pushgateway_url, job="mlplatform", registry=registry, grouping_key=self.grouping(), timeout=timeout
            )
        except OSError as exc:  # URLError and socket errors: the gateway is down or unreachable
            log.warning("metrics of stage %s not pushed to %s: %s", self.stage, s.pushgateway_url, exc)
            return False
        return True


def ingest_pushed(result: Mapping[str, Any], s: Settings | None = None) -> bool:
    """An ingest run: landed, dead-lettered by reason, lag left, wall time."""
    push = Push("ingest", {"topic": str(result["topic"])})
    push.set("mlp_ingest_landed_records", result.get("records", 0))
    push.set("mlp_ingest_lag_records", result.get("lag", 0))
    push.set("mlp_ingest_seconds", result.get("seconds", 0.0))
    for reason, count in (result.get("dead_by_kind") or {}).items():
        push.set("mlp_ingest_dead_lettered_records", count, reason=str(reason))
    if not result.get("dead_by_kind"):
        push.set("mlp_ingest_dead_lettered_records", 0, reason="none")
    return push.send(s)


def validation_pushed(topic: str, passed: bool, rows: int, failed: int, s: Settings | None = None) -> bool:
    push = Push("validation", {"topic": topic})
    push.set("mlp_validation_passed", 1 if passed else 0)
    push.set("mlp_validation_rows", rows)
    push.set("mlp_validation_failed_expectations", failed)
    return push.send(s)


def materialization_pushed(rows_by_view: Mapping[str, int], s: Settings | None = None) -> bool:
    push = Push("materialize")
    for view, rows in rows_by_view.items():
        push.set("mlp_feast_materialized_rows", rows, feature_view=view)
    return push.send(s)


def training_pushed(samples_per_s: float, gpu_utilization: Mapping[str, float], s: Settings | None = None) -> bool:
    push = Push("training")
    push.set("mlp_training_samples_per_second", samples_per_s)
    for gpu, percent in gpu_utilization.items():
        push.set("mlp_training_gpu_utilization_percent", percent, gpu=gpu)
    return push.send(s)


def gpu_utilization(tracking_uri: str, run_id: str) -> dict[str, float]:
    """Mean utilisation per GPU over an MLflow run, from its NVML system metrics (``system/gpu_<i>_utilization_
    percentage``); {} on a CPU run."""
    import re

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    out: dict[str, float] = {}
    for key in client.get_run(run_id).data.metrics:
        found = re.fullmatch(r"system/gpu_(\d+)_utilization_percentage", key)
        if found:
            history = [m.value for m in client.get_metric_history(run_id, key)]
            if history:
                out[found.group(1)] = sum(history) / len(history)
    return out


def query(s: Settings, promql: str) -> list[dict[str, Any]]:
    """An instant PromQL query against the stack's Prometheus (what the dashboards and tests read)."""
    import httpx

    resp = httpx.get(f"{s.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    resp.raise_for_status()
    result: list[dict[str, Any]] = resp.json()["data"]["result"]
    return result


def names(s: Settings) -> Iterable[str]:
    """Every metric name Prometheus holds a series for."""
    import httpx

    resp = httpx.get(f"{s.prometheus_url}/api/v1/label/__name__/values", timeout=10)
    resp.raise_for_status()
    values: list[str] = resp.json()["data"]
    return values
