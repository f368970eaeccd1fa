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
import itertools
import logging
import os
import uuid
from collections.abc import Callable, Iterator
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


INDEX_RUNS = 500  # the newest runs the Data Docs index lists (GX reads each listed result at every build)


def _limit_index(ctx: Any) -> None:
    """Bound the Data Docs index to the newest ``INDEX_RUNS`` runs. GX's index builder reads every stored
    validation result at each build, so without a bound each validation got slower as results piled up (an
    hourly topic stores about 9,000 a year). Older runs keep their pages (their links still work); they
    leave the index only. Written into the project's config once."""
    site = dict(ctx.variables.data_docs_sites[DOCS_SITE])
    index = dict(site.get("site_index_builder") or {"class_name": "DefaultSiteIndexBuilder"})
    if index.get("validation_results_limit") != INDEX_RUNS:
        site["site_index_builder"] = {**index, "validation_results_limit": INDEX_RUNS}
        ctx.update_data_docs_site(DOCS_SITE, site)


SOURCE = "landed"  # the GX data source: DuckDB over the batch's files (duckdb_dialect)
SAMPLES = 20  # unexpected values a failed expectation shows (in the report and in Data Docs)


def _checkpoint(ctx: Any, dataset: str, query: str, docs: bool, samples: int) -> Any:
    """The dataset's checkpoint: its suite (from the YAML, re-read each time) over the batch's query, with
    ``samples`` unexpected values per expectation and, for a project on disk, the action that renders the
    run into Data Docs."""
    import great_expectations as gx

    from mlplatform.validation import duckdb_dialect

    source = ctx.data_sources.add_or_update_sql(SOURCE, connection_string=duckdb_dialect.URL, create_temp_table=False)
    with contextlib.suppress(LookupError, ValueError):
        source.delete_asset(dataset)
    batch = source.add_query_asset(dataset, query=query).add_batch_definition_whole_table("batch")
    suite = gx.ExpectationSuite(name=dataset, expectations=[_expectation(e) for e in load_suite_spec(dataset)])
    suite = ctx.suites.add_or_update(suite)
    vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=dataset, data=batch, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])] if docs else []
    result_format = {"result_format": "BASIC", "partial_unexpected_count": samples}
    checkpoint = gx.Checkpoint(name=dataset, validation_definitions=[vd], actions=actions, result_format=result_format)
    return ctx.checkpoints.add_or_update(checkpoint)


GLOB_CHARACTERS = frozenset("*?[]{}")


def _sql_files(files: list[Path]) -> str:
    """``read_parquet`` of exactly these files: files of older schema versions get nulls, and the landing
    zone's ``partition=<p>`` folders are not read as a column (no hive partitioning). DuckDB reads every
    path as a glob pattern, so a path with a glob character is refused rather than matched loosely."""
    for f in files:
        if GLOB_CHARACTERS & set(str(f)):
            raise ValueError(f"cannot validate {f}: its path has a glob character ({''.join(sorted(GLOB_CHARACTERS))})")
    quoted = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{quoted}], union_by_name = true, hive_partitioning = false)"


def _ident(name: str) -> str:
    """A column name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _columns(query: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of each column of ``query``: from the files' footers, no row is read."""
    import duckdb

    with duckdb.connect() as con:
        return [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {query}").fetchall()]


def batch_query(
    files: list[Path], dataset: str, landing_root: Path | None = None, link: Callable[[Path], Path] | None = None
) -> str:
    """The batch as one SQL query over its landing files, where they lie: the rows, plus the columns its
    suite looks up in other topics' landing zones (``lookups`` in the suite: ``from`` topic, ``key``,
    ``columns`` {source: name}), joined by key, when ``landing_root`` is given.

    The source's landed files are those its manifest lists now, whatever their validation verdict (a file
    that never reached the manifest, left by a crash, is not landed); a key landed more than once takes the
    values it landed with first; a key not seen gets nulls; a looked-up column replaces a batch column of
    the same name. ``link`` maps each file to the path the query names (default: itself). Validate through
    ``open_batch``, which runs the lookups once."""
    from mlplatform.ingest.landing import Landing

    link = link or (lambda f: f)
    query = f"SELECT * FROM {_sql_files([link(f) for f in files])}"
    lookups = (_suite_file(dataset).get("lookups") or []) if landing_root is not None else []
    for n, lookup in enumerate(lookups):
        assert landing_root is not None  # (lookups is empty otherwise)
        source, key, columns = Landing(landing_root, lookup["from"]), _ident(lookup["key"]), dict(lookup["columns"])
        present = {name for name, _ in _columns(query)} & set(columns.values())
        excluded = ", ".join(_ident(c) for c in sorted(present))
        own = f"b{n}.* EXCLUDE ({excluded})" if present else f"b{n}.*"
        landed = [link(source.dir / r.file) for r in source.ranges() if r.file]
        if landed:
            picked = ", ".join(f"{_ident(src)} AS {_ident(name)}" for src, name in columns.items())
            ref = (
                f"SELECT DISTINCT ON ({key}) {key}, {picked} FROM {_sql_files(landed)} "
                f'ORDER BY {key}, "_partition", "_offset"'
            )
            names = ", ".join(f"l{n}.{_ident(name)}" for name in columns.values())
            query = f"SELECT {own}, {names} FROM ({query}) b{n} LEFT JOIN ({ref}) l{n} ON b{n}.{key} = l{n}.{key}"
        else:
            nulls = ", ".join(f"NULL AS {_ident(name)}" for name in columns.values())
            query = f"SELECT {own}, {nulls} FROM ({query}) b{n}"
    return _booleans_as_integers(query)


@contextlib.contextmanager
def open_batch(files: list[Path], dataset: str, landing_root: Path | None = None) -> Iterator[str]:
    """The batch of landing ``files`` as one DuckDB query (``batch_query``), valid for the block. Its files
    are named by links in a temporary directory, so any landing path works: DuckDB reads a path as a glob
    pattern, and GX reads the query as SQLAlchemy ``text()``, where a path's ``:name`` is a bind parameter.
    When the suite has lookups, the joined batch is written to one Parquet file there first: the join
    runs once, not in each of the suite's queries, and every expectation sees the same looked-up rows
    however much lands meanwhile."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlp-batch-") as tmp:
        links = itertools.count()

        def link(f: Path) -> Path:
            named = Path(tmp) / f"{next(links)}.parquet"
            named.symlink_to(Path(f).resolve())
            return named

        query = batch_query(files, dataset, landing_root, link)
        if landing_root is None or not _suite_file(dataset).get("lookups"):
            yield query
            return
        import duckdb

        path = Path(tmp) / "batch.parquet"
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet)")
        yield f"SELECT * FROM {_sql_files([path])}"


def _booleans_as_integers(query: str) -> str:
    """Booleans as 0/1, as pandas counts them: GX's SQL mean is ``avg(1.0 * column)``, which no SQL has for
    a boolean (a rate such as the escalation share is the mean of one)."""
    flags = [name for name, kind in _columns(query) if kind == "BOOLEAN"]
    if not flags:
        return query
    replaced = ", ".join(f"CAST({_ident(c)} AS INTEGER) AS {_ident(c)}" for c in flags)
    return f"SELECT * REPLACE ({replaced}) FROM ({query})"


def batch_stats(query: str, dataset: str) -> dict[str, float]:
    """What later batches are compared with: the row count, and the statistics the suite's ``trailing``
    parameters name, of the batch ``query``."""
    import duckdb

    means = []
    for rule in (_suite_file(dataset).get("parameters") or {}).values():
        stat = str(rule.get("trailing", "")) if isinstance(rule, dict) else ""
        if stat.startswith("mean:") and stat not in means:
            means.append(stat)
    select = ", ".join(["count(*)", *(f"avg(CAST({_ident(m.removeprefix('mean:'))} AS DOUBLE))" for m in means)])
    with duckdb.connect() as con:
        row = con.execute(f"SELECT {select} FROM ({query})").fetchone()
    assert row is not None
    stats = {"rows": float(row[0])}
    stats.update({m: float(v) for m, v in zip(means, row[1:], strict=True) if v is not None})
    return stats


def validate_query(
    query: str,
    dataset: str,
    uri: str = "",
    now: datetime | None = None,
    gx_root: Path | None = None,
    run_name: str = "adhoc",
    overrides: dict[str, float] | None = None,
    history: list[dict[str, Any]] | None = None,
    rows: int | None = None,
) -> ValidationReport:
    """Run the dataset's checkpoint over a batch given as a DuckDB query (``batch_query``).

    ``now`` is the clock the suite's time bounds are relative to; ``rows`` the batch's size, for the
    suite's trailing bounds (counted when not given). With ``gx_root`` the run goes through a GX project on
    disk there: its result is kept and rendered into the project's Data Docs site, and the report carries
    the link to the run's page.

    A batch that passes is validated once, without unexpected-value samples (those are a full scan per
    expectation more, and a passing expectation has none). A batch that fails is validated again with
    them, and only that run is kept and rendered, so its report and its Data Docs page show what was
    wrong."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    from mlplatform.validation import duckdb_dialect

    duckdb_dialect.register()
    if rows is None:
        rows = int(batch_stats(query, dataset)["rows"])
    parameters = suite_parameters(dataset, now, overrides, history, rows)
    from mlplatform.validation.docs import cached_templates

    with _project_lock(gx_root), cached_templates(gx_root):
        if gx_root is None:
            ctx = gx.get_context(mode="ephemeral")
        else:
            ctx = gx.get_context(mode="file", project_root_dir=str(gx_root))
            _limit_index(ctx)
        ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}

        def run(docs: bool, samples: int) -> tuple[Any, Any]:
            checkpoint = _checkpoint(ctx, dataset, query, docs=docs, samples=samples)
            done = checkpoint.run(expectation_parameters=parameters, run_id=gx.RunIdentifier(run_name=run_name))
            return next(iter(done.run_results.items()))

        # the first run renders nothing: a pass is rendered from its stored result (the pages the checkpoint's
        # Data Docs action would write); a failure is dropped and run again with samples, by the action
        key, result = run(docs=False, samples=0)
        if gx_root is not None and result.success:
            from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

            ctx.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=[key, ExpectationSuiteIdentifier(dataset)])
        elif not result.success:
            if gx_root is not None:
                ctx.validation_results_store.remove_key(key)
            key, result = run(docs=gx_root is not None, samples=SAMPLES)
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
    return ValidationReport(dataset, uri, bool(result.success), len(result.results), failed, rows, docs)


def validate_files(
    files: list[Path], dataset: str, landing_root: Path | None = None, **kwargs: Any
) -> ValidationReport:
    """Validate landing files (with the suite's lookups in ``landing_root``) where they lie; ``kwargs`` as
    ``validate_query``."""
    with open_batch(files, dataset, landing_root) as query:
        return validate_query(query, dataset, **kwargs)


def validate_dataframe(df: Any, dataset: str, **kwargs: Any) -> ValidationReport:
    """Validate a pandas DataFrame (a notebook's, a test's) with the same checkpoint and engine as a landed
    batch: it is written to a temporary Parquet file first. ``kwargs`` as ``validate_query``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlp-validate-") as tmp:
        path = Path(tmp) / "batch.parquet"
        df.to_parquet(path, index=False)
        return validate_files([path], dataset, **kwargs)


def read_files(files: list[Path]) -> Any:
    """The rows of landing files as one pandas DataFrame (files of older schema versions get nulls)."""
    import pandas as pd
    import pyarrow.dataset as ds

    if not files:
        return pd.DataFrame()
    import pyarrow as pa

    table = ds.dataset([str(f) for f in files], format="parquet").to_table()
    # Avro ints land as int32; readers (batch scoring, the tests' training sets) get int64, as the features do
    narrow = [i for i, f in enumerate(table.schema) if pa.types.is_integer(f.type) and f.type.bit_width < 64]
    for i in narrow:
        field = table.schema.field(i)
        table = table.set_column(i, field.with_type(pa.int64()), table.column(i).cast(pa.int64()))
    return table.to_pandas()


def _validate_ranges(
    landing: Any,
    ranges: list[Any],
    landing_root: Path,
    gx_root: Path | None,
    run_name: str,
    overrides: dict[str, float] | None = None,
) -> tuple[ValidationReport, dict[str, float]]:
    """Validate landed ranges of a topic as one batch; returns the report and the batch's statistics."""
    files = [landing.dir / r.file for r in ranges if r.file]
    with open_batch(files, landing.topic, landing_root) as query:
        stats = batch_stats(query, landing.topic)
        report = validate_query(
            query,
            landing.topic,
            landing.dir.as_uri(),
            gx_root=gx_root,
            run_name=run_name,
            overrides=overrides,
            history=landing.batches("validated"),
            rows=int(stats["rows"]),
        )
    return report, stats


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
        report, stats = _validate_ranges(landing, ranges, landing_root, gx_root, batch_id)
        detail = {"report": report.__dict__, "stats": stats, "validated_at": datetime.now(UTC).isoformat()}
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
        new_batch = f"{batch_id}.redrive-{uuid.uuid4().hex[:8]}"
        report, stats = _validate_ranges(landing, ranges, landing_root, gx_root, new_batch, overrides)
        if not report.success:
            raise ValidationFailed(f"{batch_id} stays in quarantine:\n{report.summary()}", report)
        landing.release(
            batch_id,
            ranges,
            new_batch,
            report=report.__dict__,
            stats=stats,
            overrides=overrides or {},
            validated_at=datetime.now(UTC).isoformat(),
        )
        log.info("re-drove %s as %s\n%s", batch_id, new_batch, report.summary())
        return new_batch, report
