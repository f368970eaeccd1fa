"""One typed training config, filled from a YAML file, then environment variables (``TRAIN_*``), then CLI
flags, each layer overriding the one before."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# BERT-base dimensions for random-init benchmarking (no hub download needed).
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


class TrainConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAIN_", extra="forbid")

    # data
    data: str = Field(description="training-set snapshot (Parquet file or directory; local path or s3://)")
    text_fields: list[str] = ["subject", "body"]
    label: str = "escalated"
    feature_columns: list[str] = Field(default_factory=list, description="tabular features; [] = all numeric")
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    max_length: int = Field(128, ge=8, le=512)
    cache_dir: str = ".mlp/cache/tokens"

    # model
    encoder: str = Field("minilm", description="'minilm' (offline package), an HF model dir, or s3:// path")
    init: Literal["pretrained", "random"] = "pretrained"
    arch: Literal["from_encoder", "bert-base", "tiny"] = "from_encoder"
    freeze_encoder: bool = False
    dropout: float = 0.1

    # optimisation
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.06, ge=0, le=1)
    epochs: int = Field(1, ge=1)
    max_steps: int = Field(0, ge=0, description="optimizer steps; 0 = epochs x steps per epoch")
    grad_clip: float = 1.0
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True
    compile: bool = False
    num_workers: int = 2
    bucket_size: int = Field(50, ge=1, description="batches per length bucket window")

    # checkpoints
    output_dir: str = ".mlp/train"
    artifact_uri: str = Field("", description="artifact store mirror of checkpoints and model (s3://..., file://)")
    checkpoint_every: int = Field(200, ge=1)
    keep_last: int = Field(2, ge=1)

    # tracking
    mlflow_tracking_uri: str = ""
    experiment: str = "ticket_escalation"
    run_name: str = ""
    log_every: int = Field(10, ge=1)
    log_model: bool = True
    system_metrics: bool = True
    system_metrics_interval_s: float = Field(5.0, gt=0, description="sampling interval of CPU/GPU metrics")
    dataset_uri: str = ""
    feature_service: str = ""
    result_file: str = ""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.init == "random" and self.arch == "from_encoder":
            raise ValueError("init=random needs arch=bert-base or arch=tiny (the shape to build)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry CLI flags over env over the YAML layer (see load()).
        return init_settings, env_settings

    def arch_overrides(self) -> dict[str, int]:
        return {"bert-base": BERT_BASE, "tiny": TINY}.get(self.arch, {})


def load(yaml_path: str | Path | None = None, cli: dict[str, Any] | None = None) -> TrainConfig:
    """YAML < env < CLI. Env is read by pydantic-settings; YAML values are only used where env is silent."""
    import os

    base: dict[str, Any] = yaml.safe_load(Path(yaml_path).read_text()) or {} if yaml_path else {}
    env_keys = {k[len("TRAIN_") :].lower() for k in os.environ if k.startswith("TRAIN_")}
    merged = {k: v for k, v in base.items() if k not in env_keys}
    merged.update(cli or {})
    return TrainConfig(**merged)
