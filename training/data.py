"""Training data: the Parquet snapshot, tokenized once and cached, served in length buckets with
dynamic padding. The batch order is a pure function of (seed, epoch), so a resumed run sees exactly the
batches the interrupted run would have seen."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    ids: list[np.ndarray]  # token ids per example (int32, no padding)
    feats: np.ndarray  # float32 [n, f], standardized
    labels: np.ndarray  # float32 [n]

    def __len__(self) -> int:
        return len(self.ids)


def read_snapshot(uri: str) -> Any:
    import pandas as pd

    if uri.startswith("s3://"):
        return pd.read_parquet(uri)  # through fsspec/s3fs
    path = Path(uri)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return pd.read_parquet(path)


def feature_columns(df: Any, cfg: TrainConfig) -> list[str]:
    if cfg.feature_columns:
        return list(cfg.feature_columns)
    skip = {cfg.label, *cfg.text_fields}
    cols = [c for c in df.columns if c not in skip and df[c].dtype.kind in "biuf" and not c.startswith("_")]
    return sorted(cols)


def split(n: int, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_eval = max(1, int(round(n * eval_fraction)))
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def tokenize_cached(texts: list[str], tokenizer: Any, max_length: int, cache_dir: str) -> list[np.ndarray]:
    """Tokenize once; later runs (and resumed runs) load the cached ids."""
    h = hashlib.sha256()
    h.update(f"{tokenizer.name_or_path}|{len(tokenizer)}|{max_length}|".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    path = Path(cache_dir) / f"{h.hexdigest()[:24]}.npz"
    if path.exists():
        data = np.load(path)
        flat, offsets = data["flat"], data["offsets"]
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    ids = [np.asarray(e, dtype=np.int32) for e in enc]
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(i) for i in ids])]).astype(np.int64)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, flat=np.concatenate(ids) if ids else np.zeros(0, np.int32), offsets=offsets)
    tmp.replace(path)
    return ids


def join_text(df: Any, fields: list[str]) -> list[str]:
    parts = [df[f].fillna("").astype(str) for f in fields]
    out = parts[0]
    for p in parts[1:]:
        out = out + " . " + p
    return list(out)


class BucketBatches:
    """Length-bucketed batches: shuffle, cut into windows of ``bucket_size`` batches, sort each window by
    length, batch it, shuffle the batches. Deterministic in (seed, epoch); sharded across DDP ranks."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        bucket_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.lengths, self.batch_size, self.bucket_size = lengths, batch_size, bucket_size
        self.seed, self.rank, self.world, self.shuffle = seed, rank, world, shuffle

    def batches(self, epoch: int) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            out = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
            return out[self.rank :: self.world]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        window = self.batch_size * self.bucket_size
        out = []
        for start in range(0, n, window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            out.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        perm = rng.permutation(len(out))
        out = [out[i] for i in perm]
        usable = len(out) - len(out) % self.world if self.world > 1 else len(out)
        return out[:usable][self.rank :: self.world]


class BatchDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """One item = one padded batch, so DataLoader workers do the padding off the training thread."""

    def __init__(self, data: Encoded, batches: list[np.ndarray], pad_id: int) -> None:
        self.data, self.batches, self.pad_id = data, batches, pad_id

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = self.batches[i]
        seqs = [self.data.ids[j] for j in idx]
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = s
            mask[r, : len(s)] = 1
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "features": torch.from_numpy(self.data.feats[idx]),
            "labels": torch.from_numpy(self.data.labels[idx]),
        }


def loader(
    data: Encoded, batches: list[np.ndarray], pad_id: int, cfg: TrainConfig, cuda: bool, skip: int = 0
) -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    """DataLoader over prepared batches, starting ``skip`` batches in (for resume)."""
    ds = BatchDataset(data, batches[skip:], pad_id)
    workers = cfg.num_workers if len(ds) > 0 else 0
    # A private generator: creating a loader iterator draws a base seed, and drawing it from the global RNG
    # would shift the dropout stream of a resumed run (which creates its iterator mid-epoch).
    return torch.utils.data.DataLoader(
        ds,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=cuda,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def standardize(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mean = train.mean(axis=0) if len(train) else np.zeros(train.shape[1], np.float32)
    std = train.std(axis=0) if len(train) else np.ones(train.shape[1], np.float32)
    std = np.where(std < 1e-6, 1.0, std)
    return ((train - mean) / std).astype(np.float32), ((other - mean) / std).astype(np.float32), mean, std
