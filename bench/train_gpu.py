"""GPU training benchmark: this training program vs the Hugging Face Trainer defaults, same data, same run.

Setup: BERT-base dimensions (random init from config), sequence length 128, bf16, one GPU. Reports
end-to-end samples/s (data loader included) and model-FLOPs utilisation against the bf16 dense peak
(989 TFLOP/s on an H100 SXM), for this program, for the peer (Trainer, bf16, batch 32) and for the
reference MiniLM-L6 model. Writes JSON and prints one summary line.

    python bench/train_gpu.py                 # needs CUDA
    python bench/train_gpu.py --smoke         # tiny CPU run that exercises every code path
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops() -> float:
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), 989.0)


def make_snapshot(path: Path, n: int, seq_len: int, seed: int = 0) -> Path:
    """Texts that tokenize to at least seq_len tokens (every batch is full length), with a learnable label."""
    rng = np.random.default_rng(seed)
    words = np.array("the customer reports outage refund invoice login error data export urgent slow".split())
    texts = [" ".join(rng.choice(words, size=seq_len + 8)) for _ in range(n)]
    label = np.array(["outage" in t[:200] for t in texts], dtype=int)
    df = pd.DataFrame({"subject": "ticket", "body": texts, "escalated": label, "f0": rng.normal(size=n)})
    df.to_parquet(path)
    return path


def run_ours(
    snapshot: Path,
    out: Path,
    *,
    encoder: str,
    init: str,
    arch: str,
    steps: int,
    batch: int,
    seq_len: int,
    device: str,
    compile_: bool,
    workers: int,
) -> dict[str, Any]:
    from training.config import load
    from training.loop import train
    from training.model import build_model, flops_per_token, load_tokenizer

    cfg = load(
        None,
        {
            "data": str(snapshot),
            "encoder": encoder,
            "init": init,
            "arch": arch,
            "max_length": seq_len,
            "batch_size": batch,
            "max_steps": steps,
            "device": device,
            "bf16": device == "cuda",
            "compile": compile_,
            "num_workers": workers,
            "log_every": max(1, steps // 10),
            "checkpoint_every": 10**9,
            "output_dir": str(out),
            "cache_dir": str(out / "cache"),
            "log_model": False,
            "system_metrics": False,
            "feature_columns": ["f0"],
            "eval_fraction": 0.02,
            "warmup_ratio": 0.05,
        },
    )
    result = train(cfg)
    tok = load_tokenizer(encoder)
    fpt = flops_per_token(build_model(cfg, len(tok), 1), seq_len)
    thr = result["throughput"]
    return {
        "samples_per_s": thr["samples_per_s"],
        "tokens_per_s": thr["tokens_per_s"],
        "model_tflops": fpt * thr["tokens_per_s"] / 1e12,
        "flops_per_token": fpt,
        "batch": batch,
        "steps": steps,
    }


def run_trainer(snapshot: Path, out: Path, *, steps: int, seq_len: int, smoke: bool) -> dict[str, Any]:
    """The peer: transformers.Trainer with common defaults (bf16, batch 32), BERT-base from config."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, Trainer, TrainingArguments

    from training.config import TINY
    from training.model import flops_per_token, load_tokenizer, resolve_encoder

    tok = load_tokenizer("minilm")
    conf = AutoConfig.from_pretrained(resolve_encoder("minilm"))
    for k, v in (
        TINY
        if smoke
        else {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
    ).items():
        setattr(conf, k, v)
    conf.num_labels = 2
    conf.vocab_size = len(tok)
    model = AutoModelForSequenceClassification.from_config(conf, attn_implementation="sdpa")
    df = pd.read_parquet(snapshot)
    enc = tok(list(df["subject"] + " . " + df["body"]), truncation=True, max_length=seq_len)
    labels = df["escalated"].tolist()
    ds = [
        {"input_ids": i, "attention_mask": m, "labels": y}
        for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=32,
        max_steps=steps,
        bf16=torch.cuda.is_available(),
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    t0 = time.perf_counter()
    metrics = trainer.train().metrics
    wall = time.perf_counter() - t0
    sps = metrics.get("train_samples_per_second", steps * 32 / wall)

    class _Shim(torch.nn.Module):
        def __init__(self, enc: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = enc

    fpt = flops_per_token(_Shim(model.bert), seq_len)  # type: ignore[arg-type]
    return {
        "samples_per_s": sps,
        "tokens_per_s": sps * seq_len,
        "model_tflops": fpt * sps * seq_len / 1e12,
        "batch": 32,
        "steps": steps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run (checks the code, measures nothing)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--trainer-steps", type=int, default=150)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_gpu.json"))
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device: run on a GPU machine (or --smoke)"}))
        return 0
    device = "cpu" if args.smoke else "cuda"
    steps, batch, seq = (6, 8, 32) if args.smoke else (args.steps, args.batch, args.seq_len)
    trainer_steps = 4 if args.smoke else args.trainer_steps
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        snap = make_snapshot(
            Path(tmp) / "bench.parquet", n=max(steps, trainer_steps) * max(batch, 32) + 64, seq_len=seq
        )
        arch = "tiny" if args.smoke else "bert-base"
        common = {
            "encoder": "minilm",
            "steps": steps,
            "batch": batch,
            "seq_len": seq,
            "device": device,
            "compile_": not args.smoke,
            "workers": 0 if args.smoke else 6,
        }
        ours = run_ours(snap, Path(tmp) / "ours", init="random", arch=arch, **common)
        minilm = run_ours(snap, Path(tmp) / "minilm", init="pretrained", arch="from_encoder", **common)
        peer = run_trainer(snap, Path(tmp) / "trainer", steps=trainer_steps, seq_len=seq, smoke=args.smoke)
    peak = peak_tflops()
    for r in (ours, minilm, peer):
        r["mfu"] = r["model_tflops"] / peak
    report = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
        "setup": {"arch": arch, "seq_len": seq, "bf16": device == "cuda", "peak_tflops": peak},
        "this_program_bert_base": ours,
        "this_program_minilm": minilm,
        "peer_hf_trainer_defaults": peer,
        "speedup_vs_trainer": ours["samples_per_s"] / peer["samples_per_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"train_gpu [{report['device']}]: ours {ours['samples_per_s']:.0f} samples/s, MFU {ours['mfu']:.1%} | "
        f"HF Trainer {peer['samples_per_s']:.0f} samples/s, MFU {peer['mfu']:.1%} | "
        f"x{report['speedup_vs_trainer']:.1f} | MiniLM {minilm['samples_per_s']:.0f} samples/s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
