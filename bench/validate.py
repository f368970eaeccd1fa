"""Validation benchmark: this project's Great Expectations gate on a batch of landed tickets against the same
checks written in ``pyarrow.compute``, on the same Parquet file, in the same run.

This project: what ``validate_topic`` does with a batch: ``open_batch`` (the batch as a DuckDB query
over its Parquet files, where they lie), ``batch_stats`` (its row count, for the trailing bounds), then
``validate_query``: the ``support.tickets`` suite as a GX checkpoint on GX's SQL engine over DuckDB, with
the suite parameters of that moment. Measured twice: ephemeral (the checkpoint alone) and with a file GX
project on disk (the production path: the result is stored and rendered into Data Docs).

Peer ("pyarrow.compute"): the same eight checks (row count, unique (_partition, _offset), unique ticket_id,
customer_id regex, priority range, body length, oldest event, newest event: fresh and not future) with
``pyarrow.compute`` over a ``pyarrow.parquet.read_table`` of the same file, counting unexpected rows.

Both sides must agree: on the clean batch everything passes; on a copy with faults planted (a duplicated
record, a duplicated ticket id, a malformed customer id, priority 9, an empty body, an event from next year)
both name the same failing checks. Target: this project at most 2x the peer.

    python bench/validate.py                 # 1M rows
    python bench/validate.py --rows 200000   # another size
    python bench/validate.py --smoke         # 20k rows (CI: the code paths)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _report import publish

ROOT = Path(__file__).resolve().parents[1]
DATASET = "support.tickets"
TARGET_RATIO = 2.0


def batch(rows: int, now: datetime, seed: int = 7) -> Any:
    """A landed tickets batch (the ingest's columns), vectorised: ``rows`` distinct records of ~rows/20
    customers over the 30 days before ``now``."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    customers = rng.integers(0, max(10, rows // 20), rows)
    created = (now - timedelta(days=30)).timestamp() + np.sort(rng.uniform(0, 30 * 86400 - 3600, rows))
    bodies = np.array(
        [
            "Nothing works since this morning.",
            "How do I export the monthly report?",
            "Our production system is down and customers are affected.",
        ]
    )
    return pa.table(
        {
            "ticket_id": pa.array([f"T0007-{i:08d}" for i in range(rows)]),
            "customer_id": pa.array([f"C{c:06d}" for c in customers]),
            "plan": pa.array(np.array(["free", "pro", "enterprise"])[rng.integers(0, 3, rows)]),
            "channel": pa.array(np.array(["email", "chat", "phone"])[rng.integers(0, 3, rows)]),
            "priority": pa.array(rng.integers(1, 5, rows).astype("int32")),
            "subject": pa.array(np.array(["Outage", "Question", "Billing"])[rng.integers(0, 3, rows)]),
            "body": pa.array(bodies[rng.integers(0, 3, rows)]),
            "created_at": pa.array((created * 1e6).astype("int64"), pa.timestamp("us", tz="UTC")),
            "_partition": pa.array((np.arange(rows) % 3).astype("int32")),
            "_offset": pa.array((np.arange(rows) // 3).astype("int64")),
        }
    )


def with_faults(table: Any, now: datetime) -> Any:
    """The batch with one fault per check the data can break."""
    import pyarrow as pa

    rows = table.slice(0, 6).to_pylist()
    rows[0] = dict(table.slice(10, 1).to_pylist()[0])  # the same Kafka record twice (and its ticket id)
    rows[1]["ticket_id"] = table["ticket_id"][20].as_py()  # a replayed ticket id under a new offset
    rows[2]["customer_id"] = "customer-7"
    rows[3]["priority"] = 9
    rows[4]["body"] = ""
    rows[5]["created_at"] = now + timedelta(days=365)
    for i, r in enumerate(rows[1:], start=1):
        r["_partition"], r["_offset"] = 9, i
    return pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)])


def peer_checks(path: str, params: dict[str, Any]) -> dict[str, int]:
    """The suite's checks in pyarrow.compute: unexpected rows per check (0: passes)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    n = t.num_rows
    out: dict[str, int] = {}
    out["expect_table_row_count_to_be_between"] = int(not 1 <= n <= params["batch_rows_max"])
    keys = t.group_by(["_partition", "_offset"]).aggregate([([], "count_all")])
    out["expect_compound_columns_to_be_unique"] = n - keys.num_rows if keys.num_rows < n else 0
    ids = t.group_by(["ticket_id"]).aggregate([([], "count_all")])
    dup = pc.greater(ids["count_all"], 1)
    out["expect_column_values_to_be_unique"] = int(pc.sum(pc.if_else(dup, ids["count_all"], 0)).as_py() or 0)
    bad_id = pc.invert(pc.match_substring_regex(t["customer_id"], r"^C[0-9]{6}$"))
    out["expect_column_values_to_match_regex"] = int(pc.sum(bad_id).as_py() or 0)
    pr = t["priority"]
    out["expect_column_values_to_be_between:priority"] = int(
        pc.sum(pc.or_(pc.less(pr, 1), pc.greater(pr, 4))).as_py() or 0
    )
    ln = pc.utf8_length(t["body"])
    out["expect_column_value_lengths_to_be_between"] = int(
        pc.sum(pc.or_(pc.less(ln, 1), pc.greater(ln, 20000))).as_py() or 0
    )
    ts = t["created_at"]

    def stamp(name: str) -> Any:
        return pa.scalar(params[name].to_pydatetime(), pa.timestamp("us", tz="UTC"))

    low, high = pc.min_max(ts).values()
    out["expect_column_min_to_be_between"] = int(pc.less(low, stamp("oldest_event")).as_py())
    stale_or_future = pc.or_(pc.less(high, stamp("stale_before")), pc.greater(high, stamp("newest_event")))
    out["expect_column_max_to_be_between"] = int(stale_or_future.as_py())
    return out


def ours(path: str, now: datetime, gx_root: Path | None) -> Any:
    """What ``validate_topic`` does with a batch, less the landing zone's bookkeeping."""
    from mlplatform.validation.suites import batch_stats, open_batch, validate_query

    with open_batch([Path(path)], DATASET) as query:
        rows = int(batch_stats(query, DATASET)["rows"])
        return validate_query(query, DATASET, uri=path, now=now, gx_root=gx_root, run_name="bench", rows=rows)


def failed_names(report: Any) -> set[str]:
    names = set()
    for f in report.failed:
        col = f["kwargs"].get("column")
        names.add(f"{f['type']}:{col}" if f["type"] == "expect_column_values_to_be_between" else f["type"])
    return names


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per side (the median is reported)")
    ap.add_argument("--smoke", action="store_true", help="20k rows, one run each: every code path (CI)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "validate.json"))
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.repeat = 20_000, 1
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import pyarrow.parquet as pq

    from mlplatform.validation.suites import suite_parameters

    now = datetime.now(UTC)
    params = suite_parameters(DATASET, now, rows=args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        clean, faulty = f"{tmp}/clean.parquet", f"{tmp}/faulty.parquet"
        table = batch(args.rows, now)
        pq.write_table(table, clean, compression="zstd")
        pq.write_table(with_faults(table, now), faulty, compression="zstd")
        del table

        # the verdicts agree before anything is timed
        expected = {
            "expect_compound_columns_to_be_unique",
            "expect_column_values_to_be_unique",
            "expect_column_values_to_match_regex",
            "expect_column_values_to_be_between:priority",
            "expect_column_value_lengths_to_be_between",
            "expect_column_max_to_be_between",
        }
        peer_bad = {k for k, v in peer_checks(faulty, params).items() if v}
        ours_bad = failed_names(ours(faulty, now, None))
        assert peer_bad == ours_bad == expected, (peer_bad, ours_bad)
        assert not any(peer_checks(clean, params).values())

        ours(clean, now, None)  # warm: imports, GX's first context
        peer_s, peer_out = timed(lambda: peer_checks(clean, params), args.repeat)
        eph_s, eph = timed(lambda: ours(clean, now, None), args.repeat)
        gx_root = Path(tmp) / "gx"
        ours(clean, now, gx_root)  # the project's first run creates it: not what a batch pays
        docs_s, docs = timed(lambda: ours(clean, now, gx_root), args.repeat)
        assert eph.success, eph.summary()
        assert docs.success, docs.summary()
        assert not any(peer_out.values()), peer_out
        assert docs.docs.startswith("file://")

    report = {
        "benchmark": "validate",
        "peer": "the same checks hand-written in pyarrow.compute over pyarrow.parquet.read_table",
        "mode": "smoke" if args.smoke else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": args.rows,
        "expectations": eph.evaluated,
        "peer_pyarrow_s": round(peer_s, 6),
        "this_project_gx_ephemeral_s": round(eph_s, 6),
        "this_project_gx_with_data_docs_s": round(docs_s, 6),
        "ratio_ephemeral": round(eph_s / peer_s, 2),
        "ratio_with_data_docs": round(docs_s / peer_s, 2),
        "target_ratio": TARGET_RATIO,
        # the gate itself (the checkpoint's verdict); rendering the run into Data Docs is a fixed cost per
        # batch on top (GX's Jinja site builder: the run's page, the suite's page and the index)
        "target_met": eph_s / peer_s <= TARGET_RATIO,
        "target_met_with_data_docs": docs_s / peer_s <= TARGET_RATIO,
        "data_docs_render_s": round(docs_s - eph_s, 6),
        "faults_named_alike": sorted(expected),
    }
    publish(
        report,
        args.out,
        f"validate [{report['mode']}]: {args.rows:,} rows x {eph.evaluated} expectations, GX checkpoint "
        f"{eph_s:.2f} s vs pyarrow.compute {peer_s:.2f} s: {report['ratio_ephemeral']}x, target <= {TARGET_RATIO}x: "
        f"{'met' if report['target_met'] else 'NOT met'}; with its Data Docs page {docs_s:.2f} s: "
        f"{report['ratio_with_data_docs']}x ({'met' if report['target_met_with_data_docs'] else 'NOT met'})",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
