"""The feature job on the optional standalone Spark cluster (master + worker started from the installed PySpark's
own classes, as `mlp up` starts them) gives exactly what it gives on local[2]."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.ingest.synth import SynthConfig, generate
from mlplatform.stack import process
from mlplatform.stack.services import spark_master_state

from .sparkjob import submit_feature_job

CLUSTER = ["spark-master", "spark-worker"]


@pytest.fixture(scope="module")
def cluster(stack, settings):  # type: ignore[no-untyped-def]
    """The stack's Spark cluster, started for this module (and stopped after it, unless it ran before)."""
    before = {s.name for s in stack.status() if s.running}
    stack.up(only=CLUSTER)
    yield settings.spark_cluster_url
    for svc in reversed(stack.services):
        if svc.name in CLUSTER and svc.name not in before:
            process.stop(stack.pid_file(svc))


def _landing(root: Path, topic: str, frames: list[pd.DataFrame]) -> str:
    """A topic's landing as ingestion leaves it: offset-named Parquet files and one validated batch."""
    base = root / topic
    files, offset = [], 0
    for frame in frames:
        part = base / "partition=0"
        part.mkdir(parents=True, exist_ok=True)
        frame = frame.assign(_partition=0, _offset=range(offset, offset + len(frame)), _schema_id=1)
        name = f"partition=0/{offset:020d}-{offset + len(frame) - 1:020d}.parquet"
        frame.to_parquet(base / name, index=False, coerce_timestamps="us")  # as the ingest writes them
        files.append(name)
        offset += len(frame)
    (base / "_validated").mkdir()
    (base / "_validated" / "b1.json").write_text(json.dumps({"batch": "b1", "files": files}))
    return str(base)


def _sorted_csv(path: str) -> bytes:
    df = pd.read_parquet(path)
    return df.sort_values(list(df.columns)).to_csv(index=False).encode()


def test_the_feature_job_on_the_cluster_equals_local(cluster, settings, tmp_path):
    tickets, outcomes = generate(
        SynthConfig(events=4000, seed=31, anchor=datetime(2026, 10, 1, tzinfo=UTC), late_rate=0.05)
    )
    t = pd.DataFrame(tickets)
    # an at-least-once producer sent some tickets twice: the job counts them once
    t_frames = [t.iloc[:2500], t.iloc[2500:], t.sample(150, random_state=1)]
    o = pd.DataFrame(outcomes)
    args = [
        "--tickets-root",
        _landing(tmp_path / "landing", "tickets", t_frames),
        "--outcomes-root",
        _landing(tmp_path / "landing", "outcomes", [o]),
    ]
    out = {}
    for name, master in (("local", "local[2]"), ("cluster", cluster)):
        features, labels = str(tmp_path / name / "features"), str(tmp_path / name / "labels")
        res = submit_feature_job(
            master, [*args, "--features-out", features, "--labels-out", labels], "spark.executor.memory=1g"
        )
        assert res.returncode == 0, res.stderr[-3000:]
        out[name] = (_sorted_csv(features), _sorted_csv(labels))
    assert out["cluster"][0] == out["local"][0]  # the feature table, byte for byte once sorted
    assert out["cluster"][1] == out["local"][1]  # the labelled tickets
    labelled = len(set(t.ticket_id) & set(o.ticket_id))
    assert len(out["local"][1].splitlines()) == labelled + 1  # duplicates counted once: a row per ticket + header
    # and the cluster really ran it: the master finished an application with executors on the worker
    state = spark_master_state(settings)
    assert state["aliveworkers"] >= 1
    assert any(app["name"] == "mlp-customer-features" for app in state["completedapps"]), state["completedapps"]
