"""DDP under torchrun (gloo on CPU here; NCCL on GPUs): two ranks train one model, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from .conftest import tiny_flags

ROOT = Path(__file__).resolve().parents[3]


def test_two_ranks_train_and_only_rank_zero_writes(snapshot, tmp_path):
    out = tmp_path / "ddp"
    result_file = tmp_path / "result.json"
    flags = tiny_flags(snapshot, out, max_steps=6, log_model=False, checkpoint_every=3, result_file=str(result_file))
    argv = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node=2", "-m", "training"]
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
