"""The training loop: bf16 autocast + fused AdamW + SDPA on GPU (fp32 on CPU), optional torch.compile,
warmup/decay schedule, gradient accumulation, DDP under torchrun, atomic checkpoints with exact resume,
and a checkpoint on SIGTERM before exit."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812

from training import data as D  # noqa: N812
from training.config import TrainConfig
from training.model import EscalationModel, build_model, flops_per_token, load_tokenizer, save_for_inference
from training.tracking import Tracker, git_sha, gpu_type

log = logging.getLogger(__name__)
EXIT_PREEMPTED = 143


class Preempted(SystemExit):
    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


@dataclass
class State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    best_metric: float = -1.0
    mlflow_run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- setup


def _dist() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world, local


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def schedule(total_steps: int, warmup_ratio: float) -> Any:
    warm = max(1, int(total_steps * warmup_ratio))

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return fn


def param_groups(model: EscalationModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_encoder = name.startswith("encoder.")
        no_decay = p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower()
        groups.setdefault((is_encoder, no_decay), []).append(p)
    return [
        {"params": ps, "lr": cfg.lr if enc else cfg.head_lr, "weight_decay": 0.0 if nd else cfg.weight_decay}
        for (enc, nd), ps in groups.items()
    ]


# ----------------------------------------------------------------------------------- checkpoints


class ArtifactStore:
    """Mirror of the output directory in an artifact store through fsspec (s3://bucket/prefix, gs://, file://).

    Checkpoints are uploaded as they are written, so a pod that is evicted and rescheduled elsewhere (with
    an empty local disk) resumes from the store. An object store's PUT is atomic (the object appears whole
    or not at all), so objects are written under their final key: a "write a temporary key, then move"
    dance would be a copy plus a delete there, and a kill between the two would strand the temporary key.
    On a file system (file://, a mounted volume) the write goes to a temporary name and is then renamed."""

    def __init__(self, uri: str) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.fs, self.root = fsspec.core.url_to_fs(uri.rstrip("/"))
        self.uri = uri.rstrip("/")
        self.atomic_put = not isinstance(self.fs, LocalFileSystem)

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def put(self, local: Path, rel: str) -> None:
        target = self._remote(rel)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if self.atomic_put:
            self.fs.put_file(str(local), target)
            return
        tmp = target + ".tmp"
        self.fs.put_file(str(local), tmp)
        self.fs.mv(tmp, target)

    def put_dir(self, local: Path, rel: str) -> None:
        for path in sorted(local.rglob("*")):
            if path.is_file():
                self.put(path, f"{rel}/{path.relative_to(local).as_posix()}")

    def delete(self, rel: str) -> None:
        if self.fs.exists(self._remote(rel)):
            self.fs.rm(self._remote(rel))

    def list(self, rel: str, pattern: str) -> list[str]:
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.glob(self._remote(f"{rel}/{pattern}")))

    def get(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".tmp")
        self.fs.get_file(self._remote(rel), str(tmp))
        tmp.replace(local)


class Checkpoints:
    """Atomic checkpoints (write temp, fsync, rename); keeps the last K and the best; mirrored to the
    artifact store when one is configured."""

    def __init__(self, root: Path, keep_last: int, store: ArtifactStore | None = None) -> None:
        self.root, self.keep_last, self.store = root, keep_last, store
        root.mkdir(parents=True, exist_ok=True)
        if store is not None and not self.all():
            remote = store.list("checkpoints", "step-*.pt")
            if remote:  # a fresh disk (rescheduled pod): fetch the latest checkpoint from the store
                log.info("fetching %s/checkpoints/%s from the artifact store", store.uri, remote[-1])
                store.get(f"checkpoints/{remote[-1]}", root / remote[-1])

    def _atomic(self, obj: dict[str, Any], path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    def save(self, obj: dict[str, Any], step: int, best: bool = False) -> Path:
        path = self.root / f"step-{step:08d}.pt"
        self._atomic(obj, path)
        if best:
            best_path = self.root / "best.pt"
            tmp = best_path.with_name("best.pt.tmp")
            tmp.unlink(missing_ok=True)
            os.link(path, tmp)
            tmp.replace(best_path)
        for old in self.all()[: -self.keep_last]:
            old.unlink(missing_ok=True)
            if self.store is not None:
                self.store.delete(f"checkpoints/{old.name}")
        if self.store is not None:
            self.store.put(path, f"checkpoints/{path.name}")
            if best:
                self.store.put(path, "checkpoints/best.pt")
        log.info("rank %s wrote checkpoint %s", os.environ.get("RANK", "0"), path.name)
        return path

    def all(self) -> list[Path]:
        return sorted(self.root.glob("step-*.pt"))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None


def _unwrap(model: torch.nn.Module) -> EscalationModel:
    inner = model.module if hasattr(model, "module") else model
    inner = getattr(inner, "_orig_mod", inner)
    assert isinstance(inner, EscalationModel)
    return inner


# -------------------------------------------------------------------------------------- evaluate


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: D.Encoded, pad_id: int, cfg: TrainConfig, device: torch.device, amp: bool
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    model.eval()
    batches = D.BucketBatches(np.array([len(i) for i in data.ids]), cfg.batch_size * 2, 1, 0, shuffle=False).batches(0)
    probs = np.zeros(len(data), dtype=np.float64)
    losses = []
    for b, batch in zip(batches, D.BatchDataset(data, batches, pad_id), strict=True):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch["input_ids"], batch["attention_mask"], batch["features"]).float()
        losses.append(F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="sum").item())
        probs[b] = torch.sigmoid(logits).cpu().numpy()
    model.train()
    y = data.labels
    pred = probs >= 0.5
    both = len(np.unique(y)) == 2
    return {
        "eval_loss": float(sum(losses) / max(1, len(y))),
        "eval_roc_auc": float(roc_auc_score(y, probs)) if both else float("nan"),
        "eval_f1": float(f1_score(y, pred, zero_division=0)),
        "eval_accuracy": float(accuracy_score(y, pred)),
    }


# ------------------------------------------------------------------------------------------ train


def prepare(cfg: TrainConfig) -> tuple[Any, D.Encoded, D.Encoded, list[str], np.ndarray, np.ndarray, Any]:
    df = D.read_snapshot(cfg.data)
    if cfg.label not in df.columns:
        raise ValueError(f"label column {cfg.label!r} is not in the snapshot (columns: {list(df.columns)})")
    cols = D.feature_columns(df, cfg)
    tok = load_tokenizer(cfg.encoder)
    ids = D.tokenize_cached(D.join_text(df, cfg.text_fields), tok, cfg.max_length, cfg.cache_dir)
    feats = (
        df[cols].astype("float64").fillna(0.0).to_numpy(dtype=np.float32)
        if cols
        else np.zeros((len(df), 0), np.float32)
    )
    labels = df[cfg.label].astype("float32").to_numpy()
    tr, ev = D.split(len(df), cfg.eval_fraction, cfg.seed)
    ftr, fev, mean, std = D.standardize(feats[tr], feats[ev])
    train = D.Encoded([ids[i] for i in tr], ftr, labels[tr])
    evals = D.Encoded([ids[i] for i in ev], fev, labels[ev])
    return tok, train, evals, cols, mean, std, df


def train(cfg: TrainConfig) -> dict[str, Any]:
    rank, world, local_rank = _dist()
    device = _device(cfg, local_rank)
    cuda = device.type == "cuda"
    amp = cuda and cfg.bf16
    main = rank == 0
    seed_all(cfg.seed)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tok, train_data, eval_data, cols, mean, std, _df = prepare(cfg)
    pad_id = int(tok.pad_token_id or 0)
    model: torch.nn.Module = build_model(cfg, len(tok), len(cols)).to(device)
    base = _unwrap(model)
    optimizer = torch.optim.AdamW(param_groups(base, cfg), fused=cuda)
    sampler = D.BucketBatches(
        np.array([len(i) for i in train_data.ids]), cfg.batch_size, cfg.bucket_size, cfg.seed, rank, world
    )
    micro_per_epoch = len(sampler.batches(0))
    steps_per_epoch = max(1, micro_per_epoch // cfg.grad_accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total_steps, cfg.warmup_ratio))

    out = Path(cfg.output_dir)
    store = ArtifactStore(cfg.artifact_uri) if cfg.artifact_uri and main else None
    ckpts = Checkpoints(out / "checkpoints", cfg.keep_last, store)
    if world > 1:
        dist.barrier()  # rank 0 may have fetched a checkpoint from the artifact store for everyone
    state = State()
    latest = ckpts.latest()
    if latest is not None:
        blob = torch.load(latest, map_location="cpu", weights_only=False)
        base.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        state = State(**blob["state"])
        set_rng_state(blob["rng"])
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)", latest, state.step, state.epoch, state.batch_in_epoch
        )

    if cfg.compile:
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)

    tracker = Tracker(
        cfg.mlflow_tracking_uri,
        cfg.experiment,
        cfg.run_name,
        enabled=main,
        system_metrics=cfg.system_metrics,
        interval_s=cfg.system_metrics_interval_s,
    )
    state.mlflow_run_id = tracker.start(state.mlflow_run_id) or state.mlflow_run_id
    tracker.params(
        {
            **cfg.model_dump(exclude={"mlflow_tracking_uri", "result_file"}),
            "feature_columns_used": cols,
            "n_train": len(train_data),
            "n_eval": len(eval_data),
            "world_size": world,
            "total_steps": total_steps,
        }
    )
    tracker.tags(
        {
            "dataset_uri": cfg.dataset_uri or cfg.data,
            "feature_service": cfg.feature_service,
            "git_sha": git_sha(),
            "gpu_type": gpu_type(),
            "device": str(device),
            # the GPU profile and team of a cluster pod (GpuPodOperator): what cost estimates read back
            **{
                tag: os.environ[var]
                for tag, var in (("mlplatform.gpu_profile", "MLP_GPU_PROFILE"), ("mlplatform.team", "MLP_TEAM"))
                if os.environ.get(var)
            },
        }
    )

    stop = {"flag": False}

    def on_term(signum: int, _frame: Any) -> None:
        log.warning("signal %d: checkpointing at the next step boundary, then exiting", signum)
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)

    def checkpoint(best: bool = False) -> None:
        if main:
            ckpts.save(
                {
                    "model": base.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "state": state.__dict__,
                    "rng": rng_state(),
                },
                state.step,
                best=best,
            )

    tokens_per_step_flops = flops_per_token(base, cfg.max_length)
    model.train()
    t0, seen_tokens, seen_samples = time.perf_counter(), 0, 0
    # steady-state throughput, measured after warm-up steps (compilation, allocator, loader start)
    warm_step = state.step + min(10, max(1, (total_steps - state.step) // 5))
    warm: dict[str, float] = {}
    status = "FINISHED"
    try:
        while state.step < total_steps:
            batches = sampler.batches(state.epoch)
            dl = D.loader(train_data, batches, pad_id, cfg, cuda, skip=state.batch_in_epoch)
            for batch in dl:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                state.batch_in_epoch += 1
                boundary = state.batch_in_epoch % cfg.grad_accum == 0
                sync_ctx = model.no_sync() if (world > 1 and not boundary) else _null()
                with sync_ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(batch["input_ids"], batch["attention_mask"], batch["features"])
                    loss = F.binary_cross_entropy_with_logits(logits.float(), batch["labels"]) / cfg.grad_accum
                    loss.backward()
                seen_tokens += int(batch["attention_mask"].numel())
                seen_samples += int(batch["labels"].numel())
                if not boundary:
                    continue
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                if state.step == warm_step:
                    if cuda:
                        torch.cuda.synchronize()
                    warm = {"t": time.perf_counter(), "samples": seen_samples, "tokens": seen_tokens}
                if main and state.step % cfg.log_every == 0:
                    elapsed = time.perf_counter() - t0
                    step_loss = float(loss.item() * cfg.grad_accum)
                    state.history.append({"step": state.step, "train_loss": step_loss})
                    tracker.metrics(
                        {
                            "train_loss": step_loss,
                            "lr": scheduler.get_last_lr()[0],
                            "samples_per_s": seen_samples * world / elapsed,
                            "tflops": tokens_per_step_flops * seen_tokens * world / elapsed / 1e12,
                        },
                        state.step,
                    )
                if state.step % cfg.checkpoint_every == 0:
                    checkpoint()
                if stop["flag"]:
                    checkpoint()
                    raise Preempted()
                if state.step >= total_steps:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                metrics = evaluate(model, eval_data, pad_id, cfg, device, amp)
                tracker.metrics(metrics, state.step)
                better = metrics["eval_roc_auc"] > state.best_metric
                state.best_metric = max(state.best_metric, metrics["eval_roc_auc"])
                checkpoint(best=better)
                continue
            break
        if cuda:
            torch.cuda.synchronize()
        throughput = _throughput(warm, seen_samples, seen_tokens, world, tokens_per_step_flops)
        metrics = evaluate(model, eval_data, pad_id, cfg, device, amp)
        tracker.metrics(metrics, state.step)
        if metrics["eval_roc_auc"] > state.best_metric:
            state.best_metric = metrics["eval_roc_auc"]
        checkpoint(best=metrics["eval_roc_auc"] >= state.best_metric)
        result: dict[str, Any] = {
            "run_id": tracker.run_id,
            "step": state.step,
            "metrics": metrics,
            "feature_columns": cols,
            "model_uri": None,
            "history": state.history,
            "throughput": throughput,
        }
        if main:
            model_dir = save_for_inference(base, tok, cfg, cols, mean, std, str(out / "model"))
            if store is not None:
                store.put_dir(Path(model_dir), "model")
                result["artifact_uri"] = f"{store.uri}/model"
            if cfg.log_model:
                example = _df.head(5)[[*cfg.text_fields, *cols]].reset_index(drop=True)
                result["model_uri"] = tracker.log_model(
                    model_dir, example, _predict_frame(base, tok, example, cfg, cols, mean, std)
                )
            if cfg.result_file:
                tmp = Path(cfg.result_file + ".tmp")
                tmp.write_text(json.dumps(result, default=str))
                tmp.replace(cfg.result_file)
        return result
    except Preempted:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        tracker.end(status)
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _throughput(warm: dict[str, float], samples: int, tokens: int, world: int, flops_tok: float) -> dict[str, float]:
    """Samples/s, tokens/s and model TFLOP/s over the steps after warm-up (end to end: loader included)."""
    if not warm:
        return {}
    dt = time.perf_counter() - warm["t"]
    if dt <= 0:
        return {}
    sps = (samples - warm["samples"]) * world / dt
    tps = (tokens - warm["tokens"]) * world / dt
    return {"samples_per_s": sps, "tokens_per_s": tps, "model_tflops": flops_tok * tps / 1e12, "seconds": dt}


def _predict_frame(
    model: EscalationModel, tok: Any, df: Any, cfg: TrainConfig, cols: list[str], mean: Any, std: Any
) -> Any:
    import pandas as pd

    texts = D.join_text(df, cfg.text_fields)
    enc = tok(texts, truncation=True, max_length=cfg.max_length, padding=True, return_tensors="pt")
    feats = (
        ((df[cols].astype("float64").fillna(0).to_numpy() - mean) / std).astype(np.float32)
        if cols
        else np.zeros((len(df), 0), np.float32)
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = model(
            enc["input_ids"].to(device), enc["attention_mask"].to(device), torch.from_numpy(feats).to(device)
        )
    model.train(was_training)
    prob = torch.sigmoid(logits.float()).cpu().numpy()
    return pd.DataFrame({"escalation_probability": prob, "escalate": prob >= 0.5})


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None
