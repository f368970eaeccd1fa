from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.__main__ import parse_flags
from training.config import load


def test_yaml_then_env_then_cli(tmp_path, monkeypatch):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: /d.parquet\nbatch_size: 8\nlr: 0.1\nepochs: 3\n")
    monkeypatch.setenv("TRAIN_BATCH_SIZE", "16")
    monkeypatch.setenv("TRAIN_LR", "0.2")
    cfg = load(cfg_file, {"lr": 0.3})
    assert cfg.data == "/d.parquet"
    assert cfg.epochs == 3  # yaml only
    assert cfg.batch_size == 16  # env beats yaml
    assert cfg.lr == 0.3  # cli beats env


def test_cli_flags_are_parsed_with_yaml_types():
    path, flags = parse_flags(
        ["--config", "x.yaml", "--max-steps", "5", "--feature-columns", "[a, b]", "--compile", "--lr=0.5"]
    )
    assert path == "x.yaml"
    assert flags == {"max_steps": 5, "feature_columns": ["a", "b"], "compile": True, "lr": 0.5}


def test_bad_values_and_unknown_keys_are_rejected():
    with pytest.raises(ValidationError, match="batch_size"):
        load(None, {"data": "x", "batch_size": 0})
    with pytest.raises(ValidationError, match="bogus"):
        load(None, {"data": "x", "bogus": 1})
    with pytest.raises(ValidationError, match="init=random needs arch"):
        load(None, {"data": "x", "init": "random"})
