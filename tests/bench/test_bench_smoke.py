"""Benchmarks must not rot between GPU runs: their --smoke mode runs every code path on a tiny CPU setup."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_train_gpu_bench_smoke(tmp_path):
    out = tmp_path / "train_gpu.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_gpu.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("this_program_bert_base", "this_program_minilm", "peer_hf_trainer_defaults"):
        assert report[key]["samples_per_s"] > 0, key
        assert 0 <= report[key]["mfu"] < 1, key
    assert report["speedup_vs_trainer"] > 0
    assert "train_gpu [cpu (smoke)]" in res.stdout
