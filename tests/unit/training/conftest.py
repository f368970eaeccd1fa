from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from mlplatform.ingest.synth import SynthConfig, generate


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory):
    """A small training-set snapshot with the same columns the pipeline writes (text, features, label)."""
    tickets, outcomes = generate(SynthConfig(events=480, seed=5, anchor=datetime(2026, 6, 1, tzinfo=UTC)))
    df = pd.DataFrame(tickets).merge(pd.DataFrame(outcomes)[["ticket_id", "escalated"]], on="ticket_id")
    df["escalated"] = df["escalated"].astype(int)
    df["tickets_30d"] = df.groupby("customer_id")["ticket_id"].transform("count").astype(float)
    df["high_priority_share_30d"] = df.groupby("customer_id")["priority"].transform(lambda p: (p >= 3).mean())
    path = tmp_path_factory.mktemp("snap") / "training_set.parquet"
    df.to_parquet(path)
    return path


def tiny_flags(snapshot, out, **extra):
    flags = {
        "data": str(snapshot),
        "encoder": "minilm",
        "init": "random",
        "arch": "tiny",
        "max_length": 48,
        "batch_size": 16,
        "lr": 3e-3,
        "head_lr": 3e-3,
        "device": "cpu",
        "num_workers": 0,
        "log_every": 1,
        "checkpoint_every": 1000,
        "output_dir": str(out),
        "cache_dir": str(out / "cache"),
        "feature_columns": ["tickets_30d", "high_priority_share_30d", "priority"],
        "system_metrics": False,
        "warmup_ratio": 0.1,
        "dropout": 0.1,
    }
    flags.update(extra)
    return flags
