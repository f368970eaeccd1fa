"""DDP under torchrun (gloo on CPU here; NCCL on GPUs): two ranks train one model, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from .conftest import tiny_flags

ROOT = Path(__file__).resolve().parents[3]


def _rank_log(log_dir: Path, rank: int) -> str:
    """What one rank wrote to stderr (where the program logs), from torchrun's per-rank log files."""
    found = sorted(log_dir.glob(f"*/attempt_0/{rank}/stderr.log"))
    assert len(found) == 1, f"rank {rank}: expected one stderr.log under {log_dir}, found {found}"
    return found[0].read_text()


def test_two_ranks_train_and_only_rank_zero_writes(snapshot, tmp_path):
    out = tmp_path / "ddp"
    result_file = tmp_path / "result.json"
    log_dir = tmp_path / "torchrun-logs"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = tiny_flags(
        snapshot,
        out,
        max_steps=6,
        log_model=False,
        checkpoint_every=3,
        result_file=str(result_file),
        mlflow_tracking_uri=tracking,
        experiment="ddp_test",
    )
    argv = [
        str(Path(sys.executable).with_name("torchrun")),
        "--standalone",
        "--nproc-per-node=2",
        f"--log-dir={log_dir}",
        "--tee=3",  # per-rank stdout/stderr files, and still on the console
        "-m",
        "training",
    ]
    for key, value in flags.items():
        text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
        argv += ["--" + key.replace("_", "-"), text]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["step"] == 6
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("step-*.pt"))
    assert ckpts == ["step-00000003.pt", "step-00000006.pt"]
    blob = torch.load(out / "checkpoints" / "step-00000006.pt", map_location="cpu", weights_only=False)
    assert blob["state"]["step"] == 6
    assert (out / "model" / "weights.pt").exists()

    # Both ranks trained (each logged its final eval), but only rank 0 wrote checkpoints and step metrics.
    logs = {rank: _rank_log(log_dir, rank) for rank in (0, 1)}
    for rank, text in logs.items():
        assert re.search(r"step 6 eval_loss=", text), f"rank {rank} did not finish training:\n{text[-2000:]}"
    wrote = {rank: set(re.findall(r"rank (\d+) wrote checkpoint (step-\d+\.pt)", text)) for rank, text in logs.items()}
    assert wrote[0] == {("0", "step-00000003.pt"), ("0", "step-00000006.pt")}
    assert wrote[1] == set(), f"rank 1 wrote checkpoints: {wrote[1]}"
    assert "train_loss=" in logs[0]
    assert "train_loss=" not in logs[1]

    # One MLflow run (rank 0's): a tracking rank 1 would have started a second run in the same experiment.
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("ddp_test")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [result["run_id"]]
    assert runs[0].data.params["world_size"] == "2"
