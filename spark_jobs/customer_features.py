"""Customer features and labelled tickets from validated landing partitions (PySpark).

Submitted by SparkSubmitOperator (``local[*]`` on the local profile, the ``spark_default`` master on the
cluster profile). Inputs are the landing files of validated batches (listed in each topic's
``_validated/*.json``; rejected batches are never read); outputs are swapped in atomically so a retry never
leaves a half-written table behind:

* ``--features-out``: one row per customer and day with trailing 7/30-day aggregates, stamped at the
  end of that day (so a ticket only ever sees the past: point-in-time correct in Feast).
* ``--labels-out``: tickets joined with their outcomes (the entity rows for training).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
import uuid
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812


def daily_customer_features(tickets: DataFrame, today: str | None = None) -> DataFrame:
    """One row per customer at every day its trailing aggregates change: a day with tickets, and the days
    its tickets leave the 7- and 30-day windows (D+7, D+30). Between two rows the values hold, so Feast's
    as-of lookup of the newest row is exact on any day: a customer gone quiet decays to 0 instead of keeping
    its last busy day's counts. A row is stamped at the end of its day; rows stamped after the end of
    ``today`` (default: the current date) are left for a later run."""
    day = F.to_date(F.col("created_at"))
    daily = tickets.groupBy("customer_id", day.alias("day")).agg(
        F.count("*").alias("n"),
        F.sum((F.col("priority") >= 3).cast("int")).alias("n_high"),
        F.sum(F.length("body")).alias("body_len"),
        F.max_by("plan", "created_at").alias("plan"),
    )
    daily = daily.withColumn("dayn", F.datediff(F.col("day"), F.lit("1970-01-01"))).drop("day")
    active = daily.select("customer_id", "dayn")
    change_days = (
        active.union(active.select("customer_id", (F.col("dayn") + 7).alias("dayn")))
        .union(active.select("customer_id", (F.col("dayn") + 30).alias("dayn")))
        .distinct()
    )
    grid = change_days.join(daily, ["customer_id", "dayn"], "left").fillna(0, subset=["n", "n_high", "body_len"])
    ordered = Window.partitionBy("customer_id").orderBy("dayn")
    w30 = ordered.rangeBetween(-29, 0)
    w7 = ordered.rangeBetween(-6, 0)
    n30 = F.sum("n").over(w30)
    plan = F.last("plan", ignorenulls=True).over(ordered.rowsBetween(Window.unboundedPreceding, 0))
    stamp = F.to_timestamp(F.date_add(F.lit("1970-01-01").cast("date"), F.col("dayn") + 1))
    limit = F.lit(today).cast("date") if today else F.current_date()
    return grid.select(
        "customer_id",
        stamp.alias("event_timestamp"),
        F.sum("n").over(w7).cast("long").alias("tickets_7d"),
        n30.cast("long").alias("tickets_30d"),
        F.when(n30 > 0, F.sum("n_high").over(w30) / n30).cast("double").alias("high_priority_share_30d"),
        F.when(n30 > 0, F.sum("body_len").over(w30) / n30).cast("double").alias("avg_body_len_30d"),
        (plan == "enterprise").cast("long").alias("is_enterprise"),
    ).where(F.to_date("event_timestamp") <= F.date_add(limit, 1))


def labelled_tickets(tickets: DataFrame, outcomes: DataFrame) -> DataFrame:
    return tickets.join(outcomes.select("ticket_id", "escalated"), "ticket_id", "inner").select(
        "ticket_id",
        "customer_id",
        F.col("created_at").alias("event_timestamp"),
        "subject",
        "body",
        "priority",
        "channel",
        F.col("escalated").cast("int").alias("escalated"),
    )


def _read(spark: SparkSession, files: list[str]) -> DataFrame:
    """The validated landing files of a topic (older schema versions merge in with nulls); a record that
    reached the topic twice (at-least-once producers) counts once."""
    df = spark.read.option("mergeSchema", "true").parquet(*files)
    return df.drop("_partition", "_offset", "_timestamp", "_schema_id").dropDuplicates(["ticket_id"])


def validated_files(root: str) -> list[str]:
    """Files of the topic's validated batches, minus any batch that was later rejected."""
    base = Path(root)
    files: set[str] = set()
    for kind, sign in (("_validated", 1), ("_rejected", -1)):
        for batch in sorted((base / kind).glob("*.json")):
            names = {str(base / f) for f in json.loads(batch.read_text()).get("files", [])}
            files = files | names if sign > 0 else files - names
    if not files:
        raise SystemExit(f"no validated landing data under {root}: nothing to build features from")
    return sorted(files)


def _write_atomic(df: DataFrame, out: str) -> None:
    """Write beside ``out`` under a name of this job's own, then swap it in under a lock: two jobs at once
    (a build_features run and a manual submit, say) each publish a whole table, the last one wins."""
    target = Path(out)
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    df.coalesce(1).write.mode("overwrite").parquet(str(tmp))
    old = target.with_name(f"{target.name}.old-{uuid.uuid4().hex[:12]}")
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            target.replace(old)
        tmp.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tickets-root", required=True, help="landing root of the tickets topic")
    ap.add_argument("--outcomes-root", required=True, help="landing root of the outcomes topic")
    ap.add_argument("--features-out", required=True)
    ap.add_argument("--labels-out", required=True)
    args = ap.parse_args(argv)

    spark = (
        SparkSession.builder.appName("mlp-customer-features")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        tickets = _read(spark, validated_files(args.tickets_root))
        outcomes = _read(spark, validated_files(args.outcomes_root))
        features = daily_customer_features(tickets)
        labels = labelled_tickets(tickets, outcomes)
        _write_atomic(features, args.features_out)
        _write_atomic(labels, args.labels_out)
        n_feat, n_lab = spark.read.parquet(args.features_out).count(), spark.read.parquet(args.labels_out).count()
        print(f"features rows={n_feat} labels rows={n_lab}")  # noqa: T201 - driver output for the task log
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
