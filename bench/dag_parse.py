"""DAG parse-time benchmark: each file in dags/ vs an empty Airflow DAG with one EmptyOperator, same run.

Each measurement parses one file in a fresh interpreter in which Airflow (``airflow.sdk``, the Spark
provider) and ``mlplatform.config.settings`` are already imported, and times only the file's execution:
what the dag-processor pays per file on top of Airflow itself. The peer is the floor of that cost, a DAG
file that does nothing but define one DAG with one EmptyOperator; each file's ratio to it is printed.
Exits 1 when any file's median parse time exceeds ``--max-seconds`` (2.0 s, the budget of CONVENTIONS 2).

    python bench/dag_parse.py                    # 3 fresh interpreters per file, median
    python bench/dag_parse.py --repeat 1 --out /tmp/dag_parse.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER_NAME = "empty_dag_one_empty_operator"
PEER_SOURCE = '''"""Peer: one DAG with one EmptyOperator (the floor of a DAG file's parse cost)."""
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import dag


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def empty_dag_one_empty_operator():
    EmptyOperator(task_id="noop")


empty_dag_one_empty_operator()
'''
# Imported before the clock starts: what every file of this project gets from Airflow's own process.
PARSE_CODE = """
import importlib.util, json, sys, time
import airflow.sdk, mlplatform.config.settings
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
t = time.perf_counter()
spec.loader.exec_module(mod)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def parse_seconds(path: Path, timeout: float) -> float:
    """Seconds to execute ``path`` in a fresh interpreter (Airflow already imported there)."""
    res = subprocess.run(
        [sys.executable, "-c", PARSE_CODE, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=timeout,
    )
    if res.returncode != 0:
        raise RuntimeError(f"parsing {path} failed:\n{res.stderr[-3000:]}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["seconds"])


def measure(path: Path, repeat: int, timeout: float) -> dict[str, Any]:
    runs = [parse_seconds(path, timeout) for _ in range(repeat)]
    return {"seconds": statistics.median(runs), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dags", default=str(ROOT / "dags"), help="folder of DAG files (default: dags/)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh interpreters per file; the median is reported")
    ap.add_argument("--max-seconds", type=float, default=2.0, help="budget per file; exit 1 when exceeded")
    ap.add_argument("--timeout", type=float, default=120.0, help="limit for one parse subprocess, seconds")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dag_parse.json"))
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    files = sorted(Path(args.dags).glob("*.py"))
    if not files:
        ap.error(f"no DAG files in {args.dags}")

    with tempfile.TemporaryDirectory() as tmp:
        peer_file = Path(tmp) / f"{PEER_NAME}.py"
        peer_file.write_text(PEER_SOURCE)
        peer = {"name": PEER_NAME, **measure(peer_file, args.repeat, args.timeout)}
    results: dict[str, dict[str, Any]] = {}
    for path in files:
        r = measure(path, args.repeat, args.timeout)
        r["ratio_vs_peer"] = r["seconds"] / peer["seconds"]
        r["within_budget"] = r["seconds"] <= args.max_seconds
        results[path.name] = r
    over = sorted(name for name, r in results.items() if not r["within_budget"])
    report = {
        "benchmark": "dag_parse",
        "python": sys.version.split()[0],
        "repeat": args.repeat,
        "max_seconds": args.max_seconds,
        "peer": peer,
        "files": results,
        "over_budget": over,
    }

    width = max(len(n) for n in [*results, PEER_NAME])
    print(f"{'file':<{width}}  {'median s':>9}  {'x peer':>7}  budget")
    print(f"{PEER_NAME:<{width}}  {peer['seconds']:>9.3f}  {1.0:>7.2f}  (peer)")
    for name, r in results.items():
        mark = "ok" if r["within_budget"] else f"OVER {args.max_seconds:g}s"
        print(f"{name:<{width}}  {r['seconds']:>9.3f}  {r['ratio_vs_peer']:>7.2f}  {mark}")
    print(json.dumps(report, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    slowest = max(results, key=lambda n: results[n]["seconds"])
    print(
        f"dag_parse: {len(results)} files, slowest {slowest} {results[slowest]['seconds']:.3f}s "
        f"(x{results[slowest]['ratio_vs_peer']:.1f} the empty-DAG peer, {peer['seconds']:.3f}s), "
        f"{len(over)} over {args.max_seconds:g}s -> {out}"
    )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
