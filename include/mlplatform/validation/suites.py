"""Great Expectations (1.x) validation of a landed batch.

Suites are YAML files in ``include/suites/<dataset>.yaml`` (a user adds a pipeline by adding one). A batch
that fails raises ValidationFailed with every failed expectation named, so the task log says why, and
nothing downstream runs. A passing batch gets a ``_VALIDATED.json`` marker beside its data: only
marked partitions are read by the feature job.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

log = logging.getLogger(__name__)
SUITE_DIR = Path(__file__).resolve().parents[2] / "suites"
MARKER = "_VALIDATED.json"


class ValidationFailed(RuntimeError):
    """The batch broke its data contract."""


@dataclass(frozen=True)
class ValidationReport:
    dataset: str
    uri: str
    success: bool
    evaluated: int
    failed: list[dict[str, Any]]
    rows: int

    def summary(self) -> str:
        lines = [
            f"{self.dataset}: {self.evaluated - len(self.failed)}/{self.evaluated} expectations passed "
            f"on {self.rows} rows ({self.uri})"
        ]
        for f in self.failed:
            lines.append(
                f"  FAILED {f['type']} {f['kwargs']}: unexpected={f.get('unexpected_count')} sample={f.get('sample')}"
            )
        return "\n".join(lines)


def load_suite_spec(dataset: str) -> list[dict[str, Any]]:
    path = SUITE_DIR / f"{dataset}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite for dataset {dataset!r}: add {path}")
    spec: list[dict[str, Any]] = yaml.safe_load(path.read_text())["expectations"]
    return spec


def _expectation(entry: dict[str, Any]) -> Any:
    import great_expectations as gx

    cls_name = "".join(part.capitalize() for part in entry["type"].split("_"))
    cls = getattr(gx.expectations, cls_name, None)
    if cls is None:
        raise ValueError(f"unknown Great Expectations expectation {entry['type']!r}")
    return cls(**entry.get("kwargs", {}))


def uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("file", "") else Path(uri)


def validate_dataframe(df: Any, dataset: str, uri: str = "") -> ValidationReport:
    """Run the dataset's suite over a pandas DataFrame."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    batch_def = (
        ctx.data_sources.add_pandas("landing").add_dataframe_asset(dataset).add_batch_definition_whole_dataframe("b")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name=dataset))
    for entry in load_suite_spec(dataset):
        suite.add_expectation(_expectation(entry))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{dataset}-check", data=batch_def, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df})
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            if cfg is None:
                continue
            failed.append(
                {
                    "type": cfg.type,
                    "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"},
                    "unexpected_count": (r.result or {}).get("unexpected_count"),
                    "sample": [str(x) for x in ((r.result or {}).get("partial_unexpected_list") or [])[:5]],
                    "exception": (r.exception_info or {}).get("exception_message"),
                }
            )
    return ValidationReport(dataset, uri, bool(result.success), len(result.results), failed, len(df))


def validate_landing(uri: str, dataset: str) -> ValidationReport:
    """Validate a landed run directory; write the report, and the marker only when it passed."""
    import pandas as pd

    path = uri_to_path(uri)
    files = sorted(path.rglob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    report = validate_dataframe(df, dataset, uri)
    (path / "_validation.json").write_text(json.dumps(report.__dict__, default=str, indent=2))
    marker = path / MARKER
    if not report.success:
        marker.unlink(missing_ok=True)
        raise ValidationFailed(report.summary())
    marker.write_text(json.dumps({"dataset": dataset, "rows": report.rows}))
    log.info(report.summary())
    return report


def validated_runs(topic_root: Path) -> list[Path]:
    """Every landed run of a topic that passed validation."""
    return sorted(p.parent for p in topic_root.glob(f"run_id=*/{MARKER}"))
