"""The knobs of ml_pipeline, defined once. Airflow Params (UI form, ``--conf``) are generated from this
model, and the first task re-validates the whole conf with it (unknown keys rejected, field named)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class PipelineConf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: int = Field(2000, ge=50, le=2_000_000, description="Synthetic ticket events to produce to Kafka first")
    produce: bool = Field(True, description="Produce synthetic events before ingesting (off: ingest what is there)")
    seed: int = Field(42, ge=0, description="Seed of the synthetic events (same seed, same events)")
    schema_version: Literal[1, 2] = Field(1, description="Ticket contract version produced (2 adds language)")
    poison_rate: float = Field(0.0, ge=0, le=0.5, description="Share of poison records mixed into the produced tickets")
    late_rate: float = Field(0.0, ge=0, le=1, description="Share of produced tickets whose event time lies days back")
    drift: float = Field(0.0, ge=0, le=1, description="Shift the produced world away from what the model learned")
    max_records: int = Field(0, ge=0, description="Upper bound of records ingested per topic (0: all pending)")
    ingest_max_seconds: int = Field(0, ge=0, description="Time budget of each topic's ingest (0: until the end)")
    dlq_max_share: float = Field(
        0.05, ge=0, le=1, description="Fail the ingest when more than this share of a run goes to the DLQ"
    )
    encoder: str = Field("minilm", min_length=1, description="Text encoder: minilm, an HF model dir or s3:// path")
    epochs: int = Field(1, ge=1, le=50, description="Training epochs")
    max_steps: int = Field(0, ge=0, description="Optimizer steps (0: epochs x steps per epoch)")
    max_length: int = Field(64, ge=8, le=512, description="Token length cap")
    batch_size: int = Field(32, ge=1, le=4096, description="Per-device batch size")
    gpus: int = Field(
        int(os.environ.get("MLP_TRAIN_GPUS", "1")),
        ge=0,
        le=16,
        description="GPUs per training job (cluster profile and GPU hosts)",
    )
    train_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: GPU when the pool has one")
    gpu_profile: str = Field(
        os.environ.get("MLP_GPU_PROFILE", "h100"),
        description="GPU profile of the training pod (cluster profile): a full GPU type, a MIG slice or a "
        "time-sliced share (launch/gpu_profiles.yaml); decides the pool, resources and node placement",
    )
    team: str = Field(
        "support-ml", pattern=r"^[a-z0-9][a-z0-9-]{0,40}$", description="Team whose GPU share the run uses"
    )
    priority: Literal["high", "normal", "low"] = Field(
        "normal", description="Queue priority of the GPU task (priority_weight 100 / 10 / 1, and the pod's class)"
    )
    holdout_days: int = Field(
        0, ge=0, le=365, description="Latest days held out as the gate's evaluation set (0: the latest 20% of rows)"
    )
    min_delta: float = Field(
        0.0, ge=0, le=1, description="ROC AUC the challenger must gain over the champion, on the same evaluation set"
    )
    require_approval: bool = Field(
        os.environ.get("MLP_PROFILE", "local") == "cluster",
        description="A person approves a promotion to champion (Airflow's HITL approval); always on where the "
        "platform requires it (the cluster profile)",
    )
    deploy: bool = Field(True, description="Deploy the champion and smoke-test it")

    @field_validator("gpu_profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        from mlplatform.launch.pods import gpu_profiles

        if value not in gpu_profiles():
            raise ValueError(f"unknown GPU profile; known: {', '.join(sorted(gpu_profiles()))}")
        return value


class ConfError(ValueError):
    """A bad --conf; the message names each offending field."""


def parse_conf(conf: dict[str, Any]) -> PipelineConf:
    try:
        return PipelineConf.model_validate(conf)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(conf)"
            msg = "unknown field (not a parameter of ml_pipeline)" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"field '{field}': {msg} (got {err.get('input')!r})")
        raise ConfError("invalid ml_pipeline conf: " + "; ".join(problems)) from None


def param_specs() -> dict[str, dict[str, Any]]:
    """JSON-schema keyword arguments for one airflow Param per field (default, type, bounds, doc)."""
    schema = PipelineConf.model_json_schema()
    out: dict[str, dict[str, Any]] = {}
    for name, prop in schema["properties"].items():
        spec: dict[str, Any] = {
            "default": prop["default"],
            "description": prop.get("description", ""),
            "title": prop.get("title", name),
        }
        if "enum" in prop:
            spec["enum"] = prop["enum"]
            spec["type"] = "integer" if all(isinstance(v, int) for v in prop["enum"]) else "string"
        else:
            spec["type"] = prop["type"]
        for key in ("minimum", "maximum", "minLength", "pattern"):
            if key in prop:
                spec[key] = prop[key]
        out[name] = spec
    from mlplatform.launch.pods import gpu_profiles

    out["gpu_profile"]["enum"] = sorted(gpu_profiles())  # the trigger form offers the profiles as a list
    return out
