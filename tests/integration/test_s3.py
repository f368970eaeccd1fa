"""Object storage for real: a local S3 API (moto's server mode, the stack's optional `s3` service) under the
training program's snapshot and artifact store and under an MLflow tracking server's artifact root. A training
pod that comes back on an empty disk resumes from its S3 checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlplatform.config.settings import Settings
from mlplatform.ingest.synth import SynthConfig, generate
from mlplatform.stack import process
from mlplatform.stack.services import BIN, _s3, s3_env, wait_healthy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The stack's S3 service (moto_server), on a port of its own, with its bucket; the S3 client environment."""
    home = tmp_path_factory.mktemp("s3-home")
    s = Settings(home=home, s3=True, s3_port=process.free_port(), s3_bucket=f"it-{uuid.uuid4().hex[:8]}")
    svc = _s3(s)
    pid_file, log_file = home / "s3.pid", home / "s3.log"
    rec = process.spawn(svc.argv(), pid_file=pid_file, log_file=log_file, env=dict(os.environ))
    try:
        wait_healthy(svc, rec.alive, log_file)
        assert svc.after_start is not None
        svc.after_start()
        yield s, {**os.environ, **s3_env(s)}
    finally:
        process.stop(pid_file)


def _client(env: dict[str, str]):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def _keys(env: dict[str, str], bucket: str, prefix: str) -> list[str]:
    listed = _client(env).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _snapshot(path: Path) -> None:
    tickets, outcomes = generate(SynthConfig(events=320, seed=11, anchor=datetime(2026, 6, 1, tzinfo=UTC)))
    df = pd.DataFrame(tickets).merge(pd.DataFrame(outcomes)[["ticket_id", "escalated"]], on="ticket_id")
    df["escalated"] = df["escalated"].astype(int)
    df["tickets_30d"] = df.groupby("customer_id")["ticket_id"].transform("count").astype(float)
    df.to_parquet(path)


def _train_argv(data: str, out: Path, artifact_uri: str, max_steps: int, every: int) -> list[str]:
    flags = {
        "data": data,
        "encoder": "minilm",
        "init": "random",
        "arch": "tiny",
        "max_length": 32,
        "batch_size": 16,
        "device": "cpu",
        "num_workers": 0,
        "log_every": 1,
        "max_steps": max_steps,
        "checkpoint_every": every,
        "output_dir": str(out),
        "cache_dir": str(out / "cache"),
        "feature_columns": '["tickets_30d", "priority"]',
        "log_model": "false",
        "artifact_uri": artifact_uri,
        "result_file": str(out / "result.json"),
    }
    argv = [sys.executable, "-m", "training"]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def test_training_reads_its_snapshot_from_s3_and_resumes_from_s3_on_an_empty_disk(s3, tmp_path):
    import json

    import torch

    s, env = s3
    local = tmp_path / "training_set.parquet"
    _snapshot(local)
    _client(env).upload_file(str(local), s.s3_bucket, "snapshots/run-1/training_set.parquet")
    data = f"s3://{s.s3_bucket}/snapshots/run-1/training_set.parquet"
    total, every = 40, 4

    straight = tmp_path / "straight"  # the reference: one uninterrupted run, same data, no store
    done = subprocess.run(
        _train_argv(data, straight, "", total, 1000), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    store = f"s3://{s.s3_bucket}/runs/run-1"
    node_a = tmp_path / "node-a"
    log_a = tmp_path / "node-a.log"
    with log_a.open("w") as sink:
        proc = subprocess.Popen(  # noqa: S603
            _train_argv(data, node_a, store, total, every), env=env, cwd=ROOT, stdout=sink, stderr=sink, text=True
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and f"runs/run-1/checkpoints/step-{2 * every:08d}.pt" not in _keys(
            env, s.s3_bucket, "runs/run-1/checkpoints/"
        ):
            assert proc.poll() is None, log_a.read_text()[-3000:]
            time.sleep(0.2)
        proc.kill()  # the node goes away mid-run; its disk with it
        proc.wait(timeout=60)
    uploaded = _keys(env, s.s3_bucket, "runs/run-1/checkpoints/")
    assert uploaded, "no checkpoint reached S3"
    assert not [k for k in uploaded if k.endswith(".tmp")]

    node_b = tmp_path / "node-b"  # rescheduled elsewhere: an empty disk, the same store
    resumed = subprocess.run(
        _train_argv(data, node_b, store, total, every), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = [json.loads(line) for line in resumed.stderr.splitlines() if line.startswith("{")]
    fetched = [line for line in lines if "from the artifact store" in line.get("event", "")]
    assert fetched, "the second node did not fetch a checkpoint from S3"
    assert any(line["event"].startswith("resumed from") for line in lines)
    result = json.loads((node_b / "result.json").read_text())
    assert result["step"] == total
    assert result["artifact_uri"] == f"{store}/model"
    assert "runs/run-1/model/weights.pt" in _keys(env, s.s3_bucket, "runs/run-1/model/")
    a = torch.load(straight / "model" / "weights.pt", map_location="cpu")
    b = torch.load(node_b / "model" / "weights.pt", map_location="cpu")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_mlflow_keeps_its_artifacts_in_s3(s3, tmp_path):
    """A real MLflow tracking server whose artifact root is the bucket (proxied artifacts, as `mlp up` runs it
    with MLP_S3=1): a logged artifact lands in S3 and downloads back through the server."""
    import mlflow
    from mlflow import MlflowClient

    s, env = s3
    port = process.free_port()
    server = subprocess.Popen(  # noqa: S603
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{s.s3_bucket}/mlflow",
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "the MLflow server exited"
            time.sleep(1)
        client = MlflowClient(uri)
        experiment = client.create_experiment(f"s3-{uuid.uuid4().hex[:6]}")
        report = tmp_path / "report.txt"
        report.write_text("evaluation: all good\n")
        run = client.create_run(experiment)
        client.log_artifact(run.info.run_id, str(report), artifact_path="eval")
        keys = _keys(env, s.s3_bucket, "mlflow/")
        assert any(k.endswith(f"{run.info.run_id}/artifacts/eval/report.txt") for k in keys), keys
        mlflow.set_tracking_uri(uri)
        back = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="eval/report.txt", dst_path=str(tmp_path / "back")
        )
        assert Path(back).read_text() == "evaluation: all good\n"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_training_snapshot_is_published_to_the_artifact_store_for_the_pod(s3, tmp_path, monkeypatch):
    """With an artifact root (the cluster profile's), training_snapshot hands the pod an s3:// URI: the file is
    copied there whole (no temporary key left), and reads back equal."""
    from mlplatform.pipeline.stages import to_artifact_store

    s, env = s3
    for key, value in s3_env(s).items():
        monkeypatch.setenv(key, value)
    local = tmp_path / "training_set.parquet"
    _snapshot(local)
    with_root = s.model_copy(update={"artifact_root": f"s3://{s.s3_bucket}/mlplatform/"})
    uri = to_artifact_store(local, "snapshots/run-7/training_set.parquet", with_root)
    assert uri == f"s3://{s.s3_bucket}/mlplatform/snapshots/run-7/training_set.parquet"
    assert _keys(env, s.s3_bucket, "mlplatform/snapshots/run-7/") == ["mlplatform/snapshots/run-7/training_set.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(uri), pd.read_parquet(local))
    assert to_artifact_store(local, "snapshots/run-7/training_set.parquet", with_root) == uri  # a retry: same key
