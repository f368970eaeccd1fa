"""The feature job's daily aggregates on a local Spark session (pyspark's own, no service)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "spark_jobs"))


@pytest.fixture(scope="module")
def spark():  # type: ignore[no-untyped-def]
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("mlp-unit")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")  # a few hundred rows: 200 shuffle tasks per stage is all overhead
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its connections log at interpreter exit otherwise


def _ticket(tid: str, customer: str, day: int, priority: int = 1, plan: str = "pro") -> dict:
    return {
        "ticket_id": tid,
        "customer_id": customer,
        "created_at": datetime(2026, 3, day, 12, tzinfo=UTC),
        "priority": priority,
        "body": "x" * 10,
        "plan": plan,
    }


def test_a_quiet_customer_decays_to_zero_instead_of_keeping_its_busy_days_counts(spark):
    from customer_features import daily_customer_features, feature_events

    rows = [_ticket("a", "C1", 1, priority=4), _ticket("b", "C1", 1), _ticket("c", "C1", 3, plan="enterprise")]
    df = daily_customer_features(feature_events(spark.createDataFrame(rows)), today="2026-12-31").toPandas()
    got = {r.event_timestamp.strftime("%m-%d"): r for r in df.sort_values("event_timestamp").itertuples()}
    # stamped at the end of each changing day: activity on 1 and 3 March, leaving the 7-day window on 8 and
    # 10, the 30-day window on 31 March and 2 April
    assert list(got) == ["03-02", "03-04", "03-09", "03-11", "04-01", "04-03"]
    assert (got["03-04"].tickets_7d, got["03-04"].tickets_30d) == (3, 3)
    assert (got["03-09"].tickets_7d, got["03-09"].tickets_30d) == (1, 3)  # day 1's two left the week
    assert (got["03-11"].tickets_7d, got["03-11"].tickets_30d) == (0, 3)
    assert got["04-01"].tickets_30d == 1
    assert got["04-03"].tickets_30d == 0
    assert got["04-03"].high_priority_share_30d != got["04-03"].high_priority_share_30d  # NaN: no ticket left
    assert got["03-04"].high_priority_share_30d == pytest.approx(1 / 3)
    assert got["04-03"].is_enterprise == 1  # the plan holds on quiet days


def test_rows_stamped_after_today_wait_for_a_later_run(spark):
    from customer_features import daily_customer_features, feature_events

    events = feature_events(spark.createDataFrame([_ticket("a", "C1", 1)]))
    df = daily_customer_features(events, today="2026-03-10").toPandas()
    assert sorted(df.event_timestamp.dt.strftime("%m-%d")) == ["03-02", "03-09"]  # not 31 March


def _frame(spark, rows):  # type: ignore[no-untyped-def]
    import pandas as pd

    return spark.createDataFrame(pd.DataFrame(rows))


def _stream(seed: int, n: int) -> list[dict]:
    """Tickets of a few busy customers over March and April, in arrival order, 8 % of them late (their
    event time 2-20 days before their neighbours')."""
    import random
    from datetime import timedelta

    rng = random.Random(seed)
    rows, start = [], datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(n):
        at = start + timedelta(hours=i * 60 * 24 / n * 1.0)  # spread over ~60 days
        if rng.random() < 0.08:
            at -= timedelta(days=rng.uniform(2, 20))
        rows.append(
            {
                "ticket_id": f"T{seed}-{i}",
                "customer_id": f"C{rng.randrange(12)}",
                "created_at": at,
                "priority": rng.randint(1, 4),
                "body": "x" * rng.randint(5, 50),
                "plan": rng.choice(["free", "pro", "enterprise"]),
            }
        )
    return rows


def _sorted_rows(df) -> list[tuple]:  # type: ignore[no-untyped-def]
    pdf = df.toPandas() if hasattr(df, "toPandas") else df
    return sorted(pdf.astype(str).itertuples(index=False, name=None))


def test_incremental_runs_equal_a_full_recompute_with_late_and_duplicated_events(spark, tmp_path):
    """Batches land one after another (late events reopen old windows, an at-least-once producer resends
    some tickets) while the clock moves on: after each run the incrementally maintained table equals a full
    recompute of everything validated so far, row for row."""
    import pandas as pd
    from customer_features import build_features, daily_customer_features, feature_events

    rows = _stream(5, 900)
    batches = [rows[:300], rows[300:500], rows[500:700] + rows[100:130], rows[700:]]  # batch 3 resends 30
    todays = ["2026-03-20", "2026-03-28", "2026-04-02", "2026-05-20"]
    out = str(tmp_path / "features")
    files: list[str] = []
    reports = []
    for i, (batch, today) in enumerate(zip(batches, todays, strict=True)):
        path = tmp_path / f"batch-{i}.parquet"
        pd.DataFrame(batch).to_parquet(path, index=False, coerce_timestamps="us")
        files.append(str(path))
        reports.append(build_features(spark, files, out, today))
        got = _sorted_rows(spark.read.parquet(out))
        everything = feature_events(_frame(spark, [r for b in batches[: i + 1] for r in b]))
        assert got == _sorted_rows(daily_customer_features(everything, today)), f"after batch {i} ({reports[-1]})"
    assert reports[0] == "full"
    assert all(r.startswith("incremental:") for r in reports[1:]), reports
    # the same files again on the same day: nothing to do
    assert build_features(spark, files, out, todays[-1]) == "incremental: nothing changed"
    # a batch withdrawn after the fact (rejected later): the run falls back to a full rebuild
    assert build_features(spark, files[:-1], out, todays[-1]) == "full"


def test_an_incremental_run_recomputes_only_the_customers_it_touches(spark, tmp_path):
    import pandas as pd
    from customer_features import build_features, changed_since

    rows = _stream(9, 400)
    first = tmp_path / "a.parquet"
    pd.DataFrame(rows).to_parquet(first, index=False, coerce_timestamps="us")
    out = str(tmp_path / "features")
    crashed = tmp_path / "features.tmp-0123456789ab"  # what a job killed mid-write leaves behind
    (crashed / "part-0.parquet").parent.mkdir()
    (crashed / "part-0.parquet").write_bytes(b"half")
    assert build_features(spark, [str(first)], out, "2026-05-10") == "full"
    assert not crashed.exists()
    late = [{**rows[3], "ticket_id": "late-1", "created_at": datetime(2026, 3, 15, 9, tzinfo=UTC)}]
    since = changed_since(_frame(spark, rows + late), _frame(spark, late), "2026-05-10", "2026-05-10").collect()
    assert [(r.customer_id, r.from_day) for r in since] == [(rows[3]["customer_id"], 20527)]  # 15 March 2026
    second = tmp_path / "b.parquet"
    pd.DataFrame(late).to_parquet(second, index=False, coerce_timestamps="us")
    done = build_features(spark, [str(first), str(second)], out, "2026-05-10")
    assert done == "incremental: 1 new files, 1 customers, 57 customer-days", done
