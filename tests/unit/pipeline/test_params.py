from __future__ import annotations

import jsonschema
import pytest

from mlplatform.pipeline.params import ConfError, PipelineConf, param_specs, parse_conf

# The defaults a run of ml_pipeline gets with no --conf (shown in its trigger form), written out by hand so that
# changing one is a deliberate edit here and not a silent side effect.
DOCUMENTED_DEFAULTS = {
    "events": 2000,
    "produce": True,
    "seed": 42,
    "schema_version": 1,
    "poison_rate": 0.0,
    "late_rate": 0.0,
    "drift": 0.0,
    "max_records": 0,
    "ingest_max_seconds": 0,
    "dlq_max_share": 0.05,
    "encoder": "minilm",
    "epochs": 1,
    "max_steps": 0,
    "max_length": 64,
    "batch_size": 32,
    "gpus": 1,
    "train_device": "auto",
    "gpu_profile": "h100",
    "team": "support-ml",
    "priority": "normal",
    "holdout_days": 0,
    "min_delta": 0.0,
    "require_approval": False,  # on only on the cluster profile
    "deploy": True,
}


def test_empty_conf_gives_the_documented_defaults():
    assert parse_conf({}).model_dump() == DOCUMENTED_DEFAULTS


@pytest.mark.parametrize("name", sorted(DOCUMENTED_DEFAULTS))
def test_each_default_validates_under_its_own_param_schema(name):
    spec = param_specs()[name]
    schema = {k: v for k, v in spec.items() if k not in ("default", "description", "title")}
    assert spec["default"] == DOCUMENTED_DEFAULTS[name]
    jsonschema.validate(spec["default"], schema)


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
        assert spec["type"] in {"integer", "number", "string", "boolean"}, name
    assert specs["train_device"]["enum"] == ["auto", "cpu", "cuda"]
    assert specs["events"]["minimum"] == 50


@pytest.mark.parametrize(
    ("profile", "setting", "required"),
    [("local", None, False), ("cluster", None, True), ("local", True, True), ("cluster", False, False)],
)
def test_where_the_platform_requires_approval_and_promotion_routes_through_it(profile, setting, required):
    from mlplatform.config.settings import Settings
    from mlplatform.pipeline.stages import promotion_route

    s = Settings(profile=profile, require_approval=setting)
    assert s.approval_required is required
    decision = {"promoted": True, "reason": "beats"}
    assert promotion_route(decision, False or s.approval_required) == (["approve"] if required else ["promote"])
    assert promotion_route(decision, True) == ["approve"]  # a run can always ask for one
    assert promotion_route({"promoted": False, "reason": "loses"}, True) == []
    assert promotion_route({"promoted": True, "reason": "already champion (retry)"}, True) == []
