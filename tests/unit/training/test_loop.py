"""The training loop on CPU with a tiny random-init BERT: learning, exact resume, SIGTERM checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.config import load
from training.loop import train

from .conftest import tiny_flags

ROOT = Path(__file__).resolve().parents[3]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model" / "weights.pt", map_location="cpu")


def test_loss_falls_on_learnable_data(snapshot, tmp_path):
    result = train(load(None, tiny_flags(snapshot, tmp_path, max_steps=60, log_model=False)))
    losses = [h["train_loss"] for h in result["history"]]
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first * 0.9, (first, last)
    assert result["metrics"]["eval_roc_auc"] > 0.6


def _run(flags: dict, env_extra: dict | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "training"]
    for k, v in flags.items():
        argv += [
            "--" + k.replace("_", "-"),
            str(v).lower() if isinstance(v, bool) else (str(v).replace("'", "") if isinstance(v, list) else str(v)),
        ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(proc: subprocess.Popen, step: int, log: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line)
        if f"step {step} " in line:
            return
    raise AssertionError(f"training ended before step {step}:\n" + "".join(log[-30:]))


def test_sigterm_checkpoints_and_resume_matches_straight_run(snapshot, tmp_path):
    total = 40
    straight = tmp_path / "straight"
    train(load(None, tiny_flags(snapshot, straight, max_steps=total, log_model=False)))

    resumed = tmp_path / "resumed"
    flags = tiny_flags(snapshot, resumed, max_steps=total, log_model=False)
    proc = _run(flags)
    log: list[str] = []
    _wait_for_step(proc, 5, log)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, "".join(log) + out
    ckpts = sorted((resumed / "checkpoints").glob("step-*.pt"))
    assert ckpts, "SIGTERM left no checkpoint"
    blob = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    stopped_at = blob["state"]["step"]
    assert 5 <= stopped_at < total
    assert set(blob) >= {"model", "optimizer", "scheduler", "state", "rng"}

    result = train(load(None, flags))  # resume in-process from the checkpoint
    assert result["step"] == total
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_hard_kill_resumes_from_last_periodic_checkpoint(snapshot, tmp_path):
    total, every = 30, 10
    straight = tmp_path / "straight"
    train(load(None, tiny_flags(snapshot, straight, max_steps=total, log_model=False)))
    out = tmp_path / "killed"
    flags = tiny_flags(snapshot, out, max_steps=total, log_model=False, checkpoint_every=every, keep_last=2)
    proc = _run(flags)
    log: list[str] = []
    _wait_for_step(proc, every + 2, log)
    proc.kill()  # SIGKILL: no handler runs, only the periodic checkpoint survives
    proc.wait(timeout=60)
    assert (out / "checkpoints" / f"step-{every:08d}.pt").exists()
    assert not list((out / "checkpoints").glob("*.tmp"))
    train(load(None, flags))
    a, b = _weights(straight), _weights(out)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    kept = sorted(p.name for p in (out / "checkpoints").glob("step-*.pt"))
    assert len(kept) == 2
    assert (out / "checkpoints" / "best.pt").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run `make test-gpu` on a GPU machine)")
def test_gpu_bf16_fused_compiled_path(snapshot, tmp_path):
    result = train(
        load(
            None,
            tiny_flags(
                snapshot, tmp_path, device="cuda", bf16=True, compile=True, max_steps=30, num_workers=2, log_model=False
            ),
        )
    )
    assert result["step"] == 30
    assert all(h["train_loss"] == h["train_loss"] for h in result["history"])


def test_rescheduled_pod_resumes_from_the_artifact_store(snapshot, tmp_path):
    """Checkpoints are mirrored through fsspec (file:// here, s3:// on a cluster); a run on an empty disk
    resumes from the store and ends with the weights of an uninterrupted run."""
    total, every = 24, 8
    straight = tmp_path / "straight"
    train(load(None, tiny_flags(snapshot, straight, max_steps=total, log_model=False)))
    store = (tmp_path / "store").as_uri()
    first_disk = tmp_path / "node-a"
    flags = tiny_flags(
        snapshot, first_disk, max_steps=total, log_model=False, checkpoint_every=every, artifact_uri=store
    )
    proc = _run(flags)
    _wait_for_step(proc, every + 2, [])
    proc.kill()
    proc.wait(timeout=60)
    remote = tmp_path / "store" / "checkpoints"
    assert (remote / f"step-{every:08d}.pt").exists()
    assert not list(remote.glob("*.tmp"))

    second_disk = tmp_path / "node-b"  # the pod comes back on another node: nothing on local disk
    result = train(load(None, {**flags, "output_dir": str(second_disk), "cache_dir": str(second_disk / "cache")}))
    assert result["step"] == total
    assert result["artifact_uri"] == f"{store}/model"
    assert (tmp_path / "store" / "model" / "weights.pt").exists()
    a, b = _weights(straight), _weights(second_disk)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
