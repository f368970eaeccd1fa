from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mlplatform.ingest.landing import Landing, Range
from mlplatform.validation.suites import ValidationFailed, validate_dataframe, validate_topic

NOW = datetime.now(UTC)


def tickets(n: int = 5, start: int = 0) -> pd.DataFrame:
    """A landed batch of tickets: offsets ``start``.. of partition 0, opened over the last day."""
    return pd.DataFrame(
        {
            "ticket_id": [f"T{start + i}" for i in range(n)],
            "customer_id": [f"C{i:06d}" for i in range(n)],
            "plan": ["pro"] * n,
            "channel": ["email"] * n,
            "priority": [1 + i % 4 for i in range(n)],
            "subject": ["s"] * n,
            "body": ["hello"] * n,
            "created_at": [NOW - timedelta(hours=1 + i) for i in range(n)],
            "_partition": [0] * n,
            "_offset": [start + i for i in range(n)],
        }
    )


def outcomes(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticket_id": [f"T{i}" for i in range(n)],
            "customer_id": [f"C{i:06d}" for i in range(n)],
            "escalated": [i % 2 == 0 for i in range(n)],
            "resolved_at": [NOW - timedelta(minutes=10 + i) for i in range(n)],
            "_partition": [0] * n,
            "_offset": list(range(n)),
            "ticket_created_at": [NOW - timedelta(hours=2, minutes=i) for i in range(n)],  # looked up in tickets
        }
    )


def test_good_batch_passes():
    report = validate_dataframe(tickets(), "support.tickets")
    assert report.success
    assert report.failed == []
    assert report.evaluated >= 8


def test_bad_batch_names_each_broken_expectation():
    df = tickets()
    df.loc[0, "priority"] = 9
    df.loc[2, "customer_id"] = "nobody"
    report = validate_dataframe(df, "support.tickets")
    assert not report.success
    failed = {(f["type"], f["kwargs"].get("column")) for f in report.failed}
    assert ("expect_column_values_to_be_between", "priority") in failed
    assert {t for t, _ in failed} & {
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_null",
    } == set()
    assert ("expect_column_values_to_match_regex", "customer_id") in failed
    assert "FAILED expect_column_values_to_be_between" in report.summary()


UNIQUE = "expect_column_values_to_be_unique"
COMPOUND_UNIQUE = "expect_compound_columns_to_be_unique"
MAX_BETWEEN = "expect_column_max_to_be_between"


def _failed(df: pd.DataFrame, dataset: str) -> set[tuple[str, str | None]]:
    report = validate_dataframe(df, dataset)
    return {(f["type"], f["kwargs"].get("column")) for f in report.failed}


def test_good_outcomes_pass():
    assert validate_dataframe(outcomes(), "support.outcomes").success


@pytest.mark.parametrize(
    ("break_it", "expectation"),
    [
        (lambda df: df.assign(_offset=[0, 0, 1, 2, 3]), ("expect_compound_columns_to_be_unique", None)),
        (
            lambda df: df.assign(ticket_id=["T0", "T1", "T1", "T3", "T4"]),
            ("expect_column_values_to_be_unique", "ticket_id"),
        ),
        (
            lambda df: df.assign(created_at=df.created_at.where(df.index != 2, NOW + timedelta(days=1))),
            ("expect_column_max_to_be_between", "created_at"),
        ),  # from the future
        (
            lambda df: df.assign(created_at=df.created_at.where(df.index != 2, NOW - timedelta(days=900))),
            ("expect_column_min_to_be_between", "created_at"),
        ),  # out of any plausible range
        (
            lambda df: df.assign(created_at=df.created_at - timedelta(days=60)),
            ("expect_column_max_to_be_between", "created_at"),
        ),
    ],
    ids=["offset-twice", "ticket-twice", "future-event", "ancient-event", "stale-batch"],
)
def test_each_check_the_schema_cannot_make_fails_a_batch_that_breaks_it(break_it, expectation):
    assert _failed(tickets(), "support.tickets") == set()
    assert _failed(break_it(tickets()), "support.tickets") == {expectation}


@pytest.mark.parametrize(
    ("break_it", "expectation"),
    [
        (
            lambda df: df.assign(_partition=[0, 0, 0, 0, 0], _offset=[0, 1, 1, 3, 4]),
            ("expect_compound_columns_to_be_unique", None),
        ),
        (
            lambda df: df.assign(ticket_id=["T0", "T0", "T2", "T3", "T4"]),
            ("expect_column_values_to_be_unique", "ticket_id"),
        ),
        (
            lambda df: df.assign(resolved_at=df.resolved_at.where(df.index != 1, NOW + timedelta(days=2))),
            ("expect_column_max_to_be_between", "resolved_at"),
        ),
        (
            lambda df: df.assign(
                resolved_at=df.resolved_at.where(df.index != 1, NOW - timedelta(days=900)),
                ticket_created_at=df.ticket_created_at.where(df.index != 1, NOW - timedelta(days=901)),
            ),
            ("expect_column_min_to_be_between", "resolved_at"),
        ),
    ],
    ids=["offset-twice", "resolved-twice", "future-resolution", "ancient-resolution"],
)
def test_each_outcome_check_fails_a_batch_that_breaks_it(break_it, expectation):
    assert _failed(break_it(outcomes()), "support.outcomes") == {expectation}


def land(root, frame: pd.DataFrame, start: int, topic: str = "support.tickets") -> Range:  # type: ignore[no-untyped-def]
    """Land a DataFrame as one range of partition 0, as the ingest would."""
    landing = Landing(root, topic)
    tmp = landing.tmp_data_path(0)
    frame.to_parquet(tmp)
    rng = Range(topic, 0, start, start + len(frame), rows=len(frame), dead=0, run_id="r", group="g")
    return landing.commit_range(rng, tmp)


def test_a_batch_claims_every_unvalidated_range_once(tmp_path):
    land(tmp_path, tickets(), 0)
    land(tmp_path, tickets(3, start=5), 5)
    report = validate_topic(tmp_path, "support.tickets", "b1")
    assert report is not None
    assert report.rows == 8
    assert validate_topic(tmp_path, "support.tickets", "b2") is None  # nothing new: not a failure
    landing = Landing(tmp_path, "support.tickets")
    assert len(landing.validated_files()) == 2
    land(tmp_path, tickets(2, start=8), 8)
    again = validate_topic(tmp_path, "support.tickets", "b3")
    assert again is not None
    assert again.rows == 2


def test_a_failed_batch_is_rejected_and_never_handed_on(tmp_path):
    bad = tickets()
    bad.loc[0, "priority"] = 9
    land(tmp_path, bad, 0)
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_between"):
        validate_topic(tmp_path, "support.tickets", "b1")
    landing = Landing(tmp_path, "support.tickets")
    assert landing.validated_files() == []
    assert landing.unvalidated() == []  # rejected ranges are not claimed again by the next batch
    assert (landing.dir / "_rejected" / "b1.json").exists()
    land(tmp_path, tickets(start=5), 5)
    report = validate_topic(tmp_path, "support.tickets", "b2")
    assert report is not None
    assert report.success
    assert [p.name for p in landing.validated_files()] == ["00000000000000000005-00000000000000000009.parquet"]


def test_every_run_is_rendered_into_data_docs_and_a_failure_names_its_page(tmp_path):
    from mlplatform.validation.suites import uri_to_path

    gx_root = tmp_path / "gx"
    land(tmp_path, tickets(), 0)
    report = validate_topic(tmp_path, "support.tickets", "b1", gx_root=gx_root)
    assert report is not None
    page = uri_to_path(report.docs)
    assert page.is_file()
    assert "b1" in page.parts
    bad = tickets(start=5)
    bad.loc[0, "priority"] = 9
    land(tmp_path, bad, 5)
    with pytest.raises(ValidationFailed, match=r"Data Docs: file://\S+b2\S+\.html") as failed:
        validate_topic(tmp_path, "support.tickets", "b2", gx_root=gx_root)
    bad_page = uri_to_path(str(failed.value).split("Data Docs: ")[1].strip())
    html = bad_page.read_text()
    assert "priority" in html
    assert "Failed" in html
    index = (gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").read_text()
    assert "b1" in index
    assert "b2" in index
    # the failed batch was checked twice (fast, then for samples): only the run with samples is kept and shown
    stored = list((gx_root / "gx" / "uncommitted" / "validations").rglob("*.json"))
    assert len([p for p in stored if "b2" in p.parts]) == 1, stored
    assert len([p for p in bad_page.parent.parent.rglob("*.html")]) == 1
    assert "9" in html  # the unexpected value itself, as a sample


def test_data_docs_templates_are_compiled_once_per_project_then_loaded(tmp_path, monkeypatch):
    import jinja2

    gx_root = tmp_path / "gx"
    land(tmp_path, tickets(), 0)
    validate_topic(tmp_path, "support.tickets", "b1", gx_root=gx_root)
    assert any((gx_root / "gx" / "uncommitted" / "jinja_cache").iterdir())
    compiled: list[str] = []
    compile_ = jinja2.Environment.compile

    def spy(self, source, name=None, filename=None, *args, **kwargs):
        compiled.append(str(name))
        return compile_(self, source, name, filename, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", spy)
    land(tmp_path, tickets(start=5), 5)
    report = validate_topic(tmp_path, "support.tickets", "b2", gx_root=gx_root)
    assert report is not None
    from mlplatform.validation.suites import uri_to_path

    assert "support.tickets" in uri_to_path(report.docs).read_text()  # the page is rendered in full
    index = (gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").read_text()
    assert "b2" in index
    assert [n for n in compiled if n.endswith((".j2", ".html"))] == []  # every page template came from the cache


def test_the_data_docs_index_lists_the_newest_runs_and_older_pages_stay(tmp_path, monkeypatch):
    from mlplatform.validation import suites
    from mlplatform.validation.suites import uri_to_path

    monkeypatch.setattr(suites, "INDEX_RUNS", 2)
    gx_root = tmp_path / "gx"
    pages = []
    for k in range(3):
        land(tmp_path, tickets(start=5 * k), 5 * k)
        report = validate_topic(tmp_path, "support.tickets", f"run{k}", gx_root=gx_root)
        assert report is not None
        pages.append(uri_to_path(report.docs))
    index = (gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").read_text()
    assert "run1" in index
    assert "run2" in index
    assert "run0" not in index  # out of the index (GX reads every listed result at each build)...
    assert pages[0].is_file()  # ...but its page, which its task's link opens, is still there


def test_a_stale_backfill_is_quarantined_then_redriven_with_the_bound_it_needs(tmp_path):
    from mlplatform.validation.suites import redrive

    old = tickets()
    old["created_at"] = old["created_at"] - timedelta(days=60)  # a backfill of two months ago: stale
    land(tmp_path, old, 0)
    with pytest.raises(ValidationFailed, match="expect_column_max_to_be_between"):
        validate_topic(tmp_path, "support.tickets", "b1")
    landing = Landing(tmp_path, "support.tickets")
    assert [d["batch"] for d in landing.quarantined()] == ["b1"]
    with pytest.raises(ValidationFailed, match="b1 stays in quarantine"):
        redrive(tmp_path, "support.tickets", "b1")  # nothing changed: still stale
    assert landing.validated_files() == []
    with pytest.raises(ValueError, match="no parameter 'stale_days'"):
        redrive(tmp_path, "support.tickets", "b1", overrides={"stale_days": 90})
    new_batch, report = redrive(tmp_path, "support.tickets", "b1", overrides={"stale_before": 90})
    assert report.success
    assert new_batch.startswith("b1.redrive-")
    assert landing.quarantined() == []
    assert [p.name for p in landing.validated_files()] == ["00000000000000000000-00000000000000000004.parquet"]
    record = json.loads((landing.dir / "_validated" / f"{new_batch}.json").read_text())
    assert (record["redriven_from"], record["overrides"]) == ("b1", {"stale_before": 90})
    assert (landing.dir / "_redriven" / "b1.json").exists()
    with pytest.raises(LookupError, match="not in quarantine"):
        redrive(tmp_path, "support.tickets", "b1")


def test_a_batch_redriven_after_the_suite_is_fixed_flows_on(tmp_path, monkeypatch):
    from mlplatform.validation import suites

    bad = tickets()
    bad.loc[0, "priority"] = 5  # a new priority level upstream introduced before the suite knew it
    land(tmp_path, bad, 0)
    with pytest.raises(ValidationFailed):
        validate_topic(tmp_path, "support.tickets", "b1")
    fixed = tmp_path / "suites"
    fixed.mkdir()
    for f in suites.SUITE_DIR.glob("*.yaml"):
        (fixed / f.name).write_text(f.read_text().replace("min_value: 1, max_value: 4", "min_value: 1, max_value: 5"))
    monkeypatch.setattr(suites, "SUITE_DIR", fixed)
    suites.redrive(tmp_path, "support.tickets", "b1")
    assert len(Landing(tmp_path, "support.tickets").validated_files()) == 1


def test_outcomes_are_checked_against_the_tickets_that_landed(tmp_path):
    land(tmp_path, tickets(), 0)  # T0..T4, opened over the last hours
    landed = outcomes().drop(columns="ticket_created_at")  # as landed: the lookup adds it

    land(tmp_path, landed, 0, "support.outcomes")
    assert validate_topic(tmp_path, "support.outcomes", "o1") is not None

    early = landed.assign(_offset=range(5, 10))
    early.loc[0, "resolved_at"] = NOW - timedelta(days=1)  # resolved before T0 was opened
    land(tmp_path, early, 5, "support.outcomes")
    with pytest.raises(ValidationFailed, match="expect_column_pair_values_a_to_be_greater_than_b") as failed:
        validate_topic(tmp_path, "support.outcomes", "o2")
    assert "expect_column_values_to_not_be_null" not in str(failed.value)

    unseen = landed.assign(_offset=range(10, 15), ticket_id=[f"X{i}" for i in range(5)])  # tickets never seen
    land(tmp_path, unseen, 10, "support.outcomes")
    with pytest.raises(ValidationFailed, match="expect_column_values_to_not_be_null"):
        validate_topic(tmp_path, "support.outcomes", "o3")


def _outcome_batch(n: int, start: int, rate: float) -> pd.DataFrame:
    """Outcomes of tickets T<start>.. landed at offsets start.., a share ``rate`` of them escalated."""
    return pd.DataFrame(
        {
            "ticket_id": [f"T{start + i}" for i in range(n)],
            "customer_id": [f"C{i:06d}" for i in range(n)],
            "escalated": [i < round(rate * n) for i in range(n)],
            "resolved_at": [NOW - timedelta(minutes=1) for _ in range(n)],
            "_partition": [0] * n,
            "_offset": [start + i for i in range(n)],
        }
    )


def test_an_escalation_rate_far_from_the_trailing_week_fails_and_a_usual_one_passes(tmp_path):
    land(tmp_path, tickets(600), 0)
    for k in range(3):  # the trailing week: three batches at 30 %
        land(tmp_path, _outcome_batch(100, 100 * k, 0.3), 100 * k, "support.outcomes")
        assert validate_topic(tmp_path, "support.outcomes", f"o{k}") is not None
    land(tmp_path, _outcome_batch(100, 300, 0.9), 300, "support.outcomes")
    with pytest.raises(ValidationFailed, match="expect_column_mean_to_be_between"):
        validate_topic(tmp_path, "support.outcomes", "spike")
    land(tmp_path, _outcome_batch(100, 400, 0.34), 400, "support.outcomes")
    assert validate_topic(tmp_path, "support.outcomes", "usual") is not None
    land(tmp_path, _outcome_batch(5, 500, 1.0), 500, "support.outcomes")  # 5 of 5: no evidence of a change
    assert validate_topic(tmp_path, "support.outcomes", "small") is not None


def test_a_flood_far_above_the_trailing_week_fails_the_volume_bound(tmp_path):
    for k in range(3):
        land(tmp_path, tickets(10, start=10 * k), 10 * k)
        assert validate_topic(tmp_path, "support.tickets", f"t{k}") is not None
    land(tmp_path, tickets(600, start=30), 30)
    with pytest.raises(ValidationFailed, match="expect_table_row_count_to_be_between"):
        validate_topic(tmp_path, "support.tickets", "flood")


def test_trailing_bounds_wait_for_enough_history_and_a_redrive_can_set_one():
    from mlplatform.validation.suites import suite_parameters

    week = [{"validated_at": NOW.isoformat(), "stats": {"rows": 100.0, "mean:escalated": 0.3}}] * 2
    assert suite_parameters("support.outcomes", NOW, history=week, rows=100)["escalation_rate_min"] == 0
    three = [*week, week[0]]
    low = suite_parameters("support.outcomes", NOW, history=three, rows=100)["escalation_rate_min"]
    assert 0.05 < low < 0.3
    old = [{"validated_at": (NOW - timedelta(days=8)).isoformat(), "stats": week[0]["stats"]}] * 3
    assert suite_parameters("support.outcomes", NOW, history=old, rows=100)["escalation_rate_min"] == 0
    forced = suite_parameters("support.outcomes", NOW, overrides={"escalation_rate_max": 0.99}, history=three, rows=9)
    assert forced["escalation_rate_max"] == 0.99


def test_two_validations_at_once_quarantine_a_failing_batch_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    bad = tickets()
    bad.loc[0, "priority"] = 9
    land(tmp_path, bad, 0)

    def attempt(batch: str) -> str:
        try:
            return "passed" if validate_topic(tmp_path, "support.tickets", batch, gx_root=tmp_path / "gx") else "none"
        except ValidationFailed:
            return "failed"

    with ThreadPoolExecutor(2) as pool:
        outcomes_ = sorted(pool.map(attempt, ["b1", "b2"]))
    assert outcomes_ == ["failed", "none"]  # the second found the ranges claimed by the first
    assert len(Landing(tmp_path, "support.tickets").quarantined()) == 1


def test_a_batch_of_ranges_without_rows_is_not_a_failure(tmp_path):
    landing = Landing(tmp_path, "support.tickets")
    dead = Range("support.tickets", 0, 0, 5, rows=0, dead=5, run_id="r", group="g")  # all dead-lettered
    landing.commit_range(dead, None)
    assert validate_topic(tmp_path, "support.tickets", "b1") is None  # nothing to check: no batch, no rejection
    assert not (landing.dir / "_rejected").exists() or not any((landing.dir / "_rejected").iterdir())
    land(tmp_path, tickets(), 5)
    report = validate_topic(tmp_path, "support.tickets", "b2")
    assert report is not None
    assert report.rows == 5


def test_outcomes_see_tickets_landed_under_an_older_schema_with_nulls_for_new_columns(tmp_path):
    old = tickets(3).drop(columns=["subject"])  # a file of an older schema version: no subject column
    land(tmp_path, old, 0)
    land(tmp_path, tickets(2, start=3), 3)
    report = validate_topic(tmp_path, "support.tickets", "b1")
    assert report is not None
    assert report.success, report.summary()
    assert report.rows == 5
    land(tmp_path, outcomes(5).drop(columns=["ticket_created_at"]), 0, topic="support.outcomes")
    outcome_report = validate_topic(tmp_path, "support.outcomes", "o1")
    assert outcome_report is not None
    assert outcome_report.success, outcome_report.summary()


def test_a_looked_up_column_replaces_a_batch_column_of_the_same_name(tmp_path):
    land(tmp_path, tickets(5), 0)
    stale = outcomes(5)
    stale["ticket_created_at"] = NOW + timedelta(days=1)  # the producer's own (wrong) column: after resolution
    land(tmp_path, stale, 0, topic="support.outcomes")
    report = validate_topic(tmp_path, "support.outcomes", "o1")  # the landed tickets' times are used instead
    assert report is not None
    assert report.success, report.summary()


def test_the_batch_has_the_landed_columns_only_not_the_partition_folders(tmp_path):
    import duckdb

    from mlplatform.validation.suites import batch_query

    rng = land(tmp_path, tickets(), 0)
    query = batch_query([Landing(tmp_path, "support.tickets").dir / rng.file], "support.tickets", tmp_path)
    with duckdb.connect() as con:
        names = [d[0] for d in con.execute(f"SELECT * FROM ({query}) LIMIT 0").description]
    assert names == list(tickets().columns)  # no "partition" column from the partition=0 folder


def test_a_ticket_landed_twice_is_looked_up_as_it_first_landed_and_outcomes_are_not_multiplied(tmp_path):
    import duckdb

    from mlplatform.validation.suites import open_batch

    land(tmp_path, tickets(), 0)
    again = tickets(1).assign(_offset=[5], created_at=[NOW + timedelta(days=30)])  # T0 resent, a later time
    land(tmp_path, again, 5)
    rng = land(tmp_path, outcomes().drop(columns="ticket_created_at"), 0, "support.outcomes")
    files = [Landing(tmp_path, "support.outcomes").dir / rng.file]
    with open_batch(files, "support.outcomes", tmp_path) as query:
        with duckdb.connect() as con:
            rows = con.execute(f"SELECT ticket_id, ticket_created_at FROM ({query}) ORDER BY ticket_id").fetchall()
    assert [r[0] for r in rows] == ["T0", "T1", "T2", "T3", "T4"]
    assert rows[0][1] == tickets()["created_at"][0].to_pydatetime()  # as first landed (offset 0)


def test_outcomes_with_no_ticket_landed_at_all_fail_the_seen_ticket_check(tmp_path):
    land(tmp_path, outcomes().drop(columns="ticket_created_at"), 0, "support.outcomes")
    with pytest.raises(ValidationFailed, match="expect_column_values_to_not_be_null"):
        validate_topic(tmp_path, "support.outcomes", "o1")


def test_lookups_see_only_files_the_manifest_lists(tmp_path):
    land(tmp_path, outcomes().drop(columns="ticket_created_at"), 0, "support.outcomes")
    stray = (
        Landing(tmp_path, "support.tickets").dir / "partition=0" / "00000000000000000000-00000000000000000004.parquet"
    )
    stray.parent.mkdir(parents=True)
    tickets().to_parquet(stray)  # left by a crash before its manifest entry: not landed
    with pytest.raises(ValidationFailed, match="expect_column_values_to_not_be_null"):
        validate_topic(tmp_path, "support.outcomes", "o1")


@pytest.mark.parametrize("name", ["run-:x", "landing[1]", "it's *"])
def test_a_landing_root_with_sql_or_glob_characters_validates(tmp_path, name):
    """ ":x" after a non-word character is a bind parameter to SQLAlchemy's text(); "[1]" and "*" are globs
    to DuckDB; a quote ends a SQL string."""
    root = tmp_path / name
    land(root, tickets(), 0)
    report = validate_topic(root, "support.tickets", "b1", gx_root=root / "gx")
    assert report is not None
    assert report.success, report.summary()
    land(root, outcomes().drop(columns="ticket_created_at"), 0, "support.outcomes")
    outcome_report = validate_topic(root, "support.outcomes", "o1")  # the lookup reads the tickets there too
    assert outcome_report is not None
    assert outcome_report.success, outcome_report.summary()


def test_a_path_with_a_glob_character_is_refused_rather_than_matched_loosely(tmp_path):
    from mlplatform.validation.suites import batch_query

    with pytest.raises(ValueError, match="glob character"):
        batch_query([tmp_path / "partition=0" / "0-[4].parquet"], "support.tickets")
