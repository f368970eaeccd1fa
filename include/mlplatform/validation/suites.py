"""Great Expectations (1.x) validation of a landed batch.

Suites are YAML files in ``include/suites/<dataset>.yaml`` (a user adds a pipeline by adding one). A batch
is every landed range of a topic that no batch has validated or rejected yet (whoever validates first
claims them: the stage DAG or ml_pipeline). A batch that fails raises ValidationFailed with every failed
expectation named, so the task log says why, is recorded under ``_rejected/`` with its report, and never
reaches the feature job. A passing batch is recorded under ``_validated/``: only those files are read
downstream. An empty batch is not a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from mlplatform.locks import file_lock

log = logging.getLogger(__name__)
SUITE_DIR = Path(__file__).resolve().parents[2] / "suites"


class ValidationFailed(RuntimeError):
    """The batch broke its data contract (``report``: the validation that said so)."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ValidationReport:
    dataset: str
    uri: str
    success: bool
    evaluated: int
    failed: list[dict[str, Any]]
    rows: int
    docs: str = ""  # the run's page in Data Docs (empty when validated without a GX project)

    def summary(self) -> str:
        lines = [
            f"{self.dataset}: {self.evaluated - len(self.failed)}/{self.evaluated} expectations passed "
            f"on {self.rows} rows ({self.uri})"
        ]
        for f in self.failed:
            lines.append(
                f"  FAILED {f['type']} {f['kwargs']}: unexpected={f.get('unexpected_count')} sample={f.get('sample')}"
            )
        if self.docs:
            lines.append(f"  Data Docs: {self.docs}")
        return "\n".join(lines)


def load_suite_spec(dataset: str) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = _suite_file(dataset)["expectations"]
    return spec


def _suite_file(dataset: str) -> dict[str, Any]:
    path = SUITE_DIR / f"{dataset}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite for dataset {dataset!r}: add {path}")
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def suite_parameters(
    dataset: str,
    now: datetime | None = None,
    overrides: dict[str, float] | None = None,
    history: list[dict[str, Any]] | None = None,
    rows: int = 0,
) -> dict[str, Any]:
    """The values of the suite's ``{$PARAMETER: name}`` arguments for a batch of ``rows`` validated at ``now``.

    * ``{days_ago: N}``: the instant N days before ``now`` (negative: after), as a UTC timestamp;
    * ``{trailing: STAT, days: D, min_batches: K, default: V, ...}``: a bound from the batches validated in
      the last D days (``history``: their records, each with the ``stats`` of ``batch_stats``), or V while
      fewer than K exist. STAT is ``rows`` or ``mean:<column>``; ``factor: F`` gives F times the trailing
      mean; ``z: Z, side: min|max, slack: S`` gives the trailing rate minus/plus Z binomial standard errors
      at this batch's size, plus S (a small batch is not held to a tight rate).

    ``overrides`` sets a parameter for this validation: days for ``days_ago``, the bound itself otherwise."""
    import pandas as pd

    now = now or datetime.now(UTC)
    rules = _suite_file(dataset).get("parameters") or {}
    unknown = sorted(set(overrides or {}) - set(rules))
    if unknown:
        raise ValueError(f"suite {dataset!r} has no parameter {unknown[0]!r} (it has: {', '.join(sorted(rules))})")
    values: dict[str, Any] = {}
    for name, rule in rules.items():
        given = overrides is not None and name in overrides
        if isinstance(rule, dict) and set(rule) == {"days_ago"}:
            days = float(overrides[name]) if overrides and given else float(rule["days_ago"])
            values[name] = pd.Timestamp(now - timedelta(days=days))
        elif isinstance(rule, dict) and "trailing" in rule:
            values[name] = float(overrides[name]) if overrides and given else _trailing(rule, history or [], now, rows)
        else:
            raise ValueError(f"suite {dataset!r}: parameter {name!r} is neither days_ago nor trailing: {rule!r}")
    return values


def _trailing(rule: dict[str, Any], history: list[dict[str, Any]], now: datetime, rows: int) -> float:
    import math

    stat = str(rule["trailing"])
    since = now - timedelta(days=float(rule.get("days", 7)))
    recent = [
        h["stats"]
        for h in history
        if stat in (h.get("stats") or {}) and datetime.fromisoformat(str(h["validated_at"])) >= since
    ]
    if len(recent) < int(rule.get("min_batches", 3)):
        return float(rule["default"])
    total = sum(float(r.get("rows", 1)) for r in recent)
    if stat == "rows":
        mean = total / len(recent)
    else:  # a rate over the week: each batch weighs by its rows
        mean = sum(float(r[stat]) * float(r.get("rows", 1)) for r in recent) / total
    if "factor" in rule:
        return mean * float(rule["factor"])
    spread = float(rule["z"]) * math.sqrt(max(mean * (1 - mean), 0.0) / max(rows, 1)) + float(rule.get("slack", 0))
    return max(0.0, mean - spread) if rule.get("side") == "min" else min(1.0, mean + spread)


def batch_stats(df: Any, dataset: str) -> dict[str, float]:
    """What later batches are compared with: the statistics the suite's ``trailing`` parameters name."""
    stats: dict[str, float] = {"rows": float(len(df))}
    for rule in (_suite_file(dataset).get("parameters") or {}).values():
        stat = str(rule.get("trailing", "")) if isinstance(rule, dict) else ""
        if stat.startswith("mean:") and len(df):
            stats[stat] = float(df[stat.removeprefix("mean:")].astype(float).mean())
    return stats


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


DOCS_SITE = "local_site"


@contextlib.contextmanager
def _project_lock(gx_root: Path | None) -> Iterator[None]:
    """One validation at a time writes a GX project's stores and Data Docs (its YAML and index are shared)."""
    if gx_root is None:
        yield
        return
    with file_lock(gx_root / ".validate.lock"):
        yield


def _checkpoint(ctx: Any, dataset: str, docs: bool) -> Any:
    """The dataset's checkpoint: its suite (from the YAML, re-read each time) over an in-memory DataFrame,
    and, for a project on disk, the action that renders the run into Data Docs."""
    import great_expectations as gx

    source = ctx.data_sources.add_or_update_pandas("landing")
    try:
        asset = source.get_asset(dataset)
    except LookupError:
        asset = source.add_dataframe_asset(dataset)
    try:
        batch = asset.get_batch_definition("batch")
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe("batch")
    suite = gx.ExpectationSuite(name=dataset, expectations=[_expectation(e) for e in load_suite_spec(dataset)])
    suite = ctx.suites.add_or_update(suite)
    vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=dataset, data=batch, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])] if docs else []
    return ctx.checkpoints.add_or_update(gx.Checkpoint(name=dataset, validation_definitions=[vd], actions=actions))


def validate_dataframe(
    df: Any,
    dataset: str,
    uri: str = "",
    now: datetime | None = None,
    gx_root: Path | None = None,
    run_name: str = "adhoc",
    overrides: dict[str, float] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> ValidationReport:
    """Run the dataset's checkpoint over a pandas DataFrame.

    ``now`` is the clock the suite's time bounds are relative to. With ``gx_root`` the run goes through a GX
    project on disk there: its result is kept and rendered into the project's Data Docs site, and the
    report carries the link to the run's page."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    parameters = suite_parameters(dataset, now, overrides, history, len(df))
    with _project_lock(gx_root):
        if gx_root is None:
            ctx = gx.get_context(mode="ephemeral")
        else:
            ctx = gx.get_context(mode="file", project_root_dir=str(gx_root))
        ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
        checkpoint = _checkpoint(ctx, dataset, docs=gx_root is not None)
        run = checkpoint.run(
            batch_parameters={"dataframe": df},
            expectation_parameters=parameters,
            run_id=gx.RunIdentifier(run_name=run_name),
        )
        key, result = next(iter(run.run_results.items()))
        docs = ""
        if gx_root is not None:
            urls = ctx.get_docs_sites_urls(resource_identifier=key, site_names=[DOCS_SITE])
            docs = str(urls[0]["site_url"]) if urls else ""
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
    return ValidationReport(dataset, uri, bool(result.success), len(result.results), failed, len(df), docs)


def read_files(files: list[Path]) -> Any:
    """The rows of landing files as one pandas DataFrame (files of older schema versions get nulls)."""
    import pandas as pd
    import pyarrow.dataset as ds

    if not files:
        return pd.DataFrame()
    import pyarrow as pa

    table = ds.dataset([str(f) for f in files], format="parquet").to_table()
    # Avro ints land as int32; GX's pandas range check is vectorised only for int64/float64 columns (else a
    # Python call per row), so narrower integers are widened here, losslessly
    narrow = [i for i, f in enumerate(table.schema) if pa.types.is_integer(f.type) and f.type.bit_width < 64]
    for i in narrow:
        field = table.schema.field(i)
        table = table.set_column(i, field.with_type(pa.int64()), table.column(i).cast(pa.int64()))
    return table.to_pandas()


def with_lookups(df: Any, dataset: str, landing_root: Path) -> Any:
    """``df`` plus the columns its suite looks up in other topics' landing zones (``lookups`` in the suite:
    ``from`` topic, ``key``, ``columns`` {source: name}), joined by key. Every landed row of the source counts
    as seen, whatever its validation verdict; a key not seen there gets nulls."""
    import pandas as pd
    import pyarrow.dataset as ds

    from mlplatform.ingest.landing import Landing

    for lookup in _suite_file(dataset).get("lookups") or []:
        source, key, columns = Landing(landing_root, lookup["from"]), lookup["key"], dict(lookup["columns"])
        files = [str(source.dir / r.file) for r in source.ranges() if r.file]
        if files:
            ref = ds.dataset(files, format="parquet").to_table(columns=[key, *columns]).to_pandas()
        else:
            ref = pd.DataFrame({c: pd.Series(dtype="object") for c in [key, *columns]})
        ref = ref.drop_duplicates(key).rename(columns=columns)
        df = df.drop(columns=[c for c in columns.values() if c in df.columns]).merge(ref, on=key, how="left")
    return df


def validate_topic(
    landing_root: Path, topic: str, batch_id: str, gx_root: Path | None = None
) -> ValidationReport | None:
    """Claim the topic's unvalidated ranges as one batch and validate them with the topic's checkpoint
    (rendered into the Data Docs of the GX project at ``gx_root``, when given).

    Returns None when there is nothing new. Raises ValidationFailed (after recording the rejection) when
    the batch breaks its contract."""
    from mlplatform.ingest.landing import Landing

    landing = Landing(landing_root, topic)
    with file_lock(landing.dir / ".validate.lock"):  # one validation or re-drive of a topic at a time
        ranges = landing.unvalidated()
        if not ranges:
            log.info("%s: nothing new to validate", topic)
            return None
        files = [landing.dir / r.file for r in ranges if r.file]
        frame = with_lookups(read_files(files), topic, landing_root)
        report = validate_dataframe(
            frame, topic, landing.dir.as_uri(), gx_root=gx_root, run_name=batch_id, history=landing.batches("validated")
        )
        detail = {
            "report": report.__dict__,
            "stats": batch_stats(frame, topic),
            "validated_at": datetime.now(UTC).isoformat(),
        }
        if not report.success:
            landing.record_batch("rejected", batch_id, ranges, **detail)
            raise ValidationFailed(report.summary(), report)
        landing.record_batch("validated", batch_id, ranges, **detail)
        log.info(report.summary())
        return report


def redrive(
    landing_root: Path,
    topic: str,
    batch_id: str,
    gx_root: Path | None = None,
    overrides: dict[str, float] | None = None,
) -> tuple[str, ValidationReport]:
    """Validate a quarantined batch again with the topic's current suite (``overrides``: suite parameters
    in days, recorded with the batch). If it passes, its ranges are released to flow on under a new batch id,
    which is returned with the report; if not, it stays in quarantine and ValidationFailed says why."""
    from mlplatform.ingest.landing import Landing

    landing = Landing(landing_root, topic)
    with file_lock(landing.dir / ".validate.lock"):  # one validation or re-drive of a topic at a time
        try:
            _, ranges = landing.quarantined_batch(batch_id)
        except KeyError:
            held = [d["batch"] for d in landing.quarantined()]
            raise LookupError(
                f"{topic}: batch {batch_id!r} is not in quarantine (quarantined: {', '.join(held) or 'none'})"
            ) from None
        files = [landing.dir / r.file for r in ranges if r.file]
        new_batch = f"{batch_id}.redrive-{uuid.uuid4().hex[:8]}"
        frame = with_lookups(read_files(files), topic, landing_root)
        report = validate_dataframe(
            frame,
            topic,
            landing.dir.as_uri(),
            gx_root=gx_root,
            run_name=new_batch,
            overrides=overrides,
            history=landing.batches("validated"),
        )
        if not report.success:
            raise ValidationFailed(f"{batch_id} stays in quarantine:\n{report.summary()}", report)
        landing.release(
            batch_id,
            ranges,
            new_batch,
            report=report.__dict__,
            stats=batch_stats(frame, topic),
            overrides=overrides or {},
            validated_at=datetime.now(UTC).isoformat(),
        )
        log.info("re-drove %s as %s\n%s", batch_id, new_batch, report.summary())
        return new_batch, report
