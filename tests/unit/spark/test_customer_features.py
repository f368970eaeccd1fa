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
    from customer_features import daily_customer_features

    rows = [_ticket("a", "C1", 1, priority=4), _ticket("b", "C1", 1), _ticket("c", "C1", 3, plan="enterprise")]
    df = daily_customer_features(spark.createDataFrame(rows), today="2026-12-31").toPandas()
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
    from customer_features import daily_customer_features

    df = daily_customer_features(spark.createDataFrame([_ticket("a", "C1", 1)]), today="2026-03-10").toPandas()
    assert sorted(df.event_timestamp.dt.strftime("%m-%d")) == ["03-02", "03-09"]  # not 31 March
