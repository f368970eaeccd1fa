from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from mlplatform.validation.suites import MARKER, ValidationFailed, validate_dataframe, validate_landing


def tickets(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticket_id": [f"T{i}" for i in range(n)],
            "customer_id": [f"C{i:06d}" for i in range(n)],
            "plan": ["pro"] * n,
            "channel": ["email"] * n,
            "priority": [1, 2, 3, 4, 2][:n],
            "subject": ["s"] * n,
            "body": ["hello"] * n,
            "created_at": [datetime(2026, 1, 1, tzinfo=UTC)] * n,
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
    df.loc[1, "plan"] = "platinum"
    df.loc[2, "customer_id"] = "nobody"
    report = validate_dataframe(df, "support.tickets")
    assert not report.success
    failed = {(f["type"], f["kwargs"].get("column")) for f in report.failed}
    assert ("expect_column_values_to_be_between", "priority") in failed
    assert ("expect_column_values_to_be_in_set", "plan") in failed
    assert ("expect_column_values_to_match_regex", "customer_id") in failed
    assert "FAILED expect_column_values_to_be_between" in report.summary()


def test_failed_landing_raises_and_leaves_no_marker(tmp_path):
    run = tmp_path / "run_id=r1" / "event_date=2026-01-01"
    run.mkdir(parents=True)
    bad = tickets()
    bad["priority"] = 0
    bad.to_parquet(run / "part-0.parquet")
    with pytest.raises(ValidationFailed, match="priority"):
        validate_landing((tmp_path / "run_id=r1").as_uri(), "support.tickets")
    assert not (tmp_path / "run_id=r1" / MARKER).exists()
    assert (tmp_path / "run_id=r1" / "_validation.json").exists()


def test_passing_landing_is_marked(tmp_path):
    run = tmp_path / "run_id=r2" / "event_date=2026-01-01"
    run.mkdir(parents=True)
    tickets().to_parquet(run / "part-0.parquet")
    report = validate_landing((tmp_path / "run_id=r2").as_uri(), "support.tickets")
    assert report.rows == 5
    assert (tmp_path / "run_id=r2" / MARKER).exists()


def test_unknown_dataset_says_where_the_suite_goes():
    with pytest.raises(FileNotFoundError, match="no expectation suite for dataset 'nope'"):
        validate_dataframe(tickets(), "nope")
