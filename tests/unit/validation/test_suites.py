from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from mlplatform.ingest.landing import Landing, Range
from mlplatform.validation.suites import ValidationFailed, validate_dataframe, validate_topic


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


def land(root, frame: pd.DataFrame, start: int) -> Range:  # type: ignore[no-untyped-def]
    """Land a DataFrame as one range of partition 0, as the ingest would."""
    landing = Landing(root, "support.tickets")
    tmp = landing.tmp_data_path(0)
    frame.to_parquet(tmp)
    rng = Range("support.tickets", 0, start, start + len(frame), rows=len(frame), dead=0, run_id="r", group="g")
    return landing.commit_range(rng, tmp)


def test_a_batch_claims_every_unvalidated_range_once(tmp_path):
    land(tmp_path, tickets(), 0)
    land(tmp_path, tickets(3), 5)
    report = validate_topic(tmp_path, "support.tickets", "b1")
    assert report is not None
    assert report.rows == 8
    assert validate_topic(tmp_path, "support.tickets", "b2") is None  # nothing new: not a failure
    landing = Landing(tmp_path, "support.tickets")
    assert len(landing.validated_files()) == 2
    land(tmp_path, tickets(2), 8)
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
    land(tmp_path, tickets(), 5)
    report = validate_topic(tmp_path, "support.tickets", "b2")
    assert report is not None
    assert report.success
    assert [p.name for p in landing.validated_files()] == ["00000000000000000005-00000000000000000009.parquet"]
