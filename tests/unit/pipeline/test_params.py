from __future__ import annotations

import pytest

from mlplatform.pipeline.params import ConfError, PipelineConf, param_specs, parse_conf


def test_defaults_are_valid():
    assert parse_conf({}).events == PipelineConf().events


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"events": "lots"}, "events"),
        ({"events": 3}, "events"),
        ({"train_device": "tpu"}, "train_device"),
        ({"evnts": 100}, "evnts"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_conf_names_the_field(conf, field):
    with pytest.raises(ConfError, match=f"field '{field}'"):
        parse_conf(conf)


def test_unknown_field_is_called_unknown():
    with pytest.raises(ConfError, match="unknown field"):
        parse_conf({"epoch": 2})


def test_param_specs_cover_every_field_with_type_and_description():
    specs = param_specs()
    assert set(specs) == set(PipelineConf.model_fields)
    for name, spec in specs.items():
        assert spec["description"], name
        assert spec["type"] in {"integer", "string", "boolean"}, name
    assert specs["train_device"]["enum"] == ["auto", "cpu", "cuda"]
    assert specs["events"]["minimum"] == 50
