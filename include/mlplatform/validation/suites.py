"""Great Expectations (1.x) validation of a landed batch.

Suites are YAML files in ``include/suites/<dataset>.yaml`` (a user adds a pipeline by adding one). A batch
is every landed range of a topic that no batch has validated or rejected yet (whoever validates first
claims them: the stage DAG or ml_pipeline). A batch that fails raises ValidationFailed with every failed
expectation named, so the task log says why, is recorded under ``_rejected/`` with its report, and never
reaches the feature job. A passing batch is recorded under ``_validated/``: only those files are read
downstream. An empty batch is not a failure.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

log = logging.getLogger(__name__)
SUITE_DIR = Path(__file__).resolve().parents[2] / "suites"


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


def read_files(files: list[Path]) -> Any:
    """The rows of landing files as one pandas DataFrame (files of older schema versions get nulls)."""
    import pandas as pd
    import pyarrow.dataset as ds

    if not files:
        return pd.DataFrame()
    return ds.dataset([str(f) for f in files], format="parquet").to_table().to_pandas()


def validate_topic(landing_root: Path, topic: str, batch_id: str) -> ValidationReport | None:
    """Claim the topic's unvalidated ranges as one batch and validate them with the topic's suite.

    Returns None when there is nothing new. Raises ValidationFailed (after recording the rejection) when
    the batch breaks its contract."""
    from mlplatform.ingest.landing import Landing

    landing = Landing(landing_root, topic)
    ranges = landing.unvalidated()
    if not ranges:
        log.info("%s: nothing new to validate", topic)
        return None
    files = [landing.dir / r.file for r in ranges if r.file]
    report = validate_dataframe(read_files(files), topic, landing.dir.as_uri())
    detail = {"report": report.__dict__, "validated_at": datetime.now(UTC).isoformat()}
    if not report.success:
        landing.record_batch("rejected", batch_id, ranges, **detail)
        raise ValidationFailed(report.summary())
    landing.record_batch("validated", batch_id, ranges, **detail)
    log.info(report.summary())
    return report
