"""Serving benchmark: this project's model server against ``mlflow models serve`` on the same registered model,
side by side in one run, under closed-loop load at concurrency 1 and 8.

Model: the project's own escalation model (MiniLM-L6 encoder + customer features, ``training`` package),
trained for a few steps on synthetic tickets and registered in MLflow, so both servers load the same pyfunc.
Both run as separate processes on loopback, one worker each, with the same torch thread count.

This project: ``python -m mlplatform.serving.server`` on ``models:/<name>@champion``: ``POST /predict`` with
``{customer_id, subject, body}``; it looks the customer's five features up in Feast (Redis) itself and
micro-batches concurrent requests.

Peer ("mlflow models serve"): MLflow's scoring server (``--env-manager local``) on the same version:
``POST /invocations`` with ``dataframe_records`` holding the text *and* the five feature values (it cannot
look them up, so the client hands them over: the peer does less work per request).

Before timing, the same request must get the same probability from both (to 1e-3). Load comes from wrk
(Debian's; a C load generator, so its own CPU stays small beside the servers on this machine): ``c``
connections, each sending its next request when the answer came, for a fixed duration after a warm-up;
reported: requests/s, p50 and p99 latency, non-2xx answers.
Target: at concurrency 8, at least 3x the peer's throughput with a p99 no worse than the peer's.
It starts PostgreSQL, Redis and MLflow of a bench state dir (.mlp-bench) unless they run, and stops what it
started.

    python bench/serving.py                  # MiniLM, 20 s per point
    python bench/serving.py --smoke          # tiny random encoder, 3 s per point (CI: the code paths)
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _report import publish

ROOT = Path(__file__).resolve().parents[1]
BENCH_ENV = {
    "MLP_HOME": str(ROOT / ".mlp-bench"),
    "MLP_POSTGRES_PORT": "35433",
    "MLP_REDIS_PORT": "36380",
    "MLP_MLFLOW_PORT": "35000",
}
SERVICES = ["postgres", "redis", "mlflow"]
FEATURES = ["tickets_7d", "tickets_30d", "high_priority_share_30d", "avg_body_len_30d", "is_enterprise"]
TARGET_SPEEDUP, CONCURRENCY = 3.0, (1, 8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def feature_table(customers: int, day: datetime) -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in range(customers)],
            "event_timestamp": [day] * customers,
            "tickets_7d": [i % 7 for i in range(customers)],
            "tickets_30d": [i % 30 for i in range(customers)],
            "high_priority_share_30d": [(i % 10) / 10 for i in range(customers)],
            "avg_body_len_30d": [float(100 + i % 50) for i in range(customers)],
            "is_enterprise": [i % 2 for i in range(customers)],
        }
    )


def train_model(s: Any, work: Path, smoke: bool) -> tuple[str, str]:
    """A few steps of the real training program on synthetic tickets; returns (model name, version)."""
    import mlflow
    import numpy as np
    import pandas as pd

    from mlplatform.ingest.synth import SynthConfig, generate
    from training.config import load
    from training.loop import train

    tickets, outcomes = generate(SynthConfig(events=600, seed=5))
    df = pd.DataFrame(tickets)
    escalated = {o["ticket_id"]: int(o["escalated"]) for o in outcomes}
    df["escalated"] = df.ticket_id.map(escalated)
    rng = np.random.default_rng(5)
    for f in FEATURES:
        df[f] = rng.integers(0, 30, len(df)).astype("float64")
    data = work / "snapshot.parquet"
    df.to_parquet(data, index=False)
    cfg = load(
        None,
        {
            "data": str(data),
            "encoder": "minilm",
            "init": "random" if smoke else "pretrained",
            "arch": "tiny" if smoke else "from_encoder",
            "max_length": 64,
            "batch_size": 16,
            "max_steps": 3,
            "device": "cpu",
            "num_workers": 0,
            "output_dir": str(work / "train"),
            "cache_dir": str(work / "cache"),
            "feature_columns": FEATURES,
            "mlflow_tracking_uri": s.mlflow_uri,
            "experiment": "bench-serving",
            "system_metrics": False,
        },
    )
    result = train(cfg)
    name = f"bench_serving_{uuid.uuid4().hex[:6]}"
    mlflow.set_tracking_uri(s.mlflow_uri)
    client = mlflow.MlflowClient(s.mlflow_uri)
    client.set_tag(result["run_id"], "feast.feature_service", s.feature_service)
    version = str(mlflow.register_model(result["model_uri"], name).version)
    client.set_registered_model_alias(name, "champion", version)
    return name, version


def start(argv: list[str], env: dict[str, str], log: Path, url: str, timeout: float = 240) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[:4]} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"{url} not up after {timeout}s: {log.read_text()[-3000:]}")


WRK_SCRIPT = """
local bodies, i = {}, 0
for line in io.lines(os.getenv("MLP_BENCH_BODIES")) do bodies[#bodies + 1] = line end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def _ms(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


def load(url: str, bodies: list[dict[str, Any]], clients: int, seconds: float, warmup: float, work: Path) -> dict:
    """wrk (a C load generator: its own CPU cost stays out of the way) with ``clients`` connections, each
    sending its next request when the answer came (closed loop), after ``warmup`` seconds not counted."""
    import json

    script, lines = work / "post.lua", work / f"bodies-{abs(hash(url))}.jsonl"
    script.write_text(WRK_SCRIPT)
    lines.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    env = {**os.environ, "MLP_BENCH_BODIES": str(lines)}

    def wrk(duration: float) -> str:
        argv = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout  # noqa: S603

    if warmup:
        wrk(warmup)
    out = wrk(seconds)
    fields = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            fields["req_per_s"] = float(parts[1])
        elif parts[:1] in (["50%"], ["99%"]):
            fields[f"p{parts[0][:-1]}_ms"] = round(_ms(parts[1]), 2)
        elif "requests in" in line:
            fields["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            fields["errors"] = int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            fields["socket_errors"] = line.split(":", 1)[1].strip()
    return {"clients": clients, "errors": 0, **fields}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from mlplatform.config.settings import get_settings
    from mlplatform.features import store

    base = get_settings()
    s = base.model_copy(update={"feast_project": f"bench_{uuid.uuid4().hex[:10]}"})
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    threads = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="mlp-bench-serving-") as tmp:
        work = Path(tmp)
        features = work / "customer_daily"
        features.mkdir()
        os.environ["MLP_FEATURES_URI"] = str(features)
        table = feature_table(args.customers, day)
        table.to_parquet(features / "part-0.parquet", index=False)
        procs: list[subprocess.Popen] = []
        try:
            store.apply(s)
            store.materialize(s, end=day + timedelta(days=2), days=10)
            name, version = train_model(s, work, args.smoke)
            env = {**os.environ, **s.as_env(), "OMP_NUM_THREADS": threads, "MLFLOW_TRACKING_URI": s.mlflow_uri}
            # mlflow models serve execs `uvicorn` by name: the environment's own bin dir first
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
            ours_port, peer_port = free_port(), free_port()
            ours = start(
                [sys.executable, "-m", "mlplatform.serving.server", "--model-uri", f"models:/{name}@champion",
                 "--tracking-uri", s.mlflow_uri, "--port", str(ours_port), "--threads", threads, *args.server_arg],
                env, work / "ours.log", f"http://127.0.0.1:{ours_port}/health",
            )  # fmt: skip
            procs.append(ours)
            peer = start(
                [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}/{version}",
                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(peer_port), "-w", "1"],
                env, work / "peer.log", f"http://127.0.0.1:{peer_port}/ping",
            )  # fmt: skip
            procs.append(peer)
            texts = [
                ("Production outage", "Everything is down since this morning, we lose money."),
                ("Question about export", "How do I export the monthly report to CSV?"),
                ("Login problem", "Two of our users cannot log in after the update."),
            ]
            ids = [i * 37 % args.customers for i in range(200)]
            ours_bodies = [
                {"customer_id": f"C{c:06d}", "subject": texts[c % 3][0], "body": texts[c % 3][1]} for c in ids
            ]
            rows = table.set_index("customer_id")
            peer_bodies = [
                {"dataframe_records": [{"subject": b["subject"], "body": b["body"],
                                        **{f: float(rows.loc[b["customer_id"], f]) for f in FEATURES}}]}
                for b in ours_bodies
            ]  # fmt: skip
            ours_url, peer_url = f"http://127.0.0.1:{ours_port}/predict", f"http://127.0.0.1:{peer_port}/invocations"
            # the same answer from both, before anything is timed
            for a, b in zip(ours_bodies[:5], peer_bodies[:5], strict=True):
                p_ours = httpx.post(ours_url, json=a, timeout=60).json()["escalation_probability"]
                p_peer = httpx.post(peer_url, json=b, timeout=60).json()["predictions"][0]["escalation_probability"]
                if abs(p_ours - p_peer) > 1e-3:
                    raise SystemExit(f"the two servers disagree on {a}: {p_ours} vs {p_peer}")
            points = {}
            for c in args.concurrency:
                points[str(c)] = {
                    "peer_mlflow_models_serve": load(peer_url, peer_bodies, c, args.seconds, args.warmup, work),
                    "this_project": load(ours_url, ours_bodies, c, args.seconds, args.warmup, work),
                }
                mine, theirs = points[str(c)]["this_project"], points[str(c)]["peer_mlflow_models_serve"]
                points[str(c)]["speedup"] = round(mine["req_per_s"] / max(theirs["req_per_s"], 1e-9), 2)
                points[str(c)]["p99_ratio"] = round(mine["p99_ms"] / max(theirs["p99_ms"], 1e-9), 2)
            metrics = httpx.get(f"http://127.0.0.1:{ours_port}/metrics", timeout=10).text
            batch = [ln for ln in metrics.splitlines() if ln.startswith("mlp_serving_batch_size_")]
            raw: dict[str, dict[str, float]] = {}
            for ln in metrics.splitlines():
                if ln.startswith(("mlp_serving_stage_seconds_sum", "mlp_serving_stage_seconds_count")):
                    kind, stage = ln.split("{")[0].rsplit("_", 1)[1], ln.split('"')[1]
                    raw.setdefault(stage, {})[kind] = float(ln.split()[-1])
            stages = {
                k: {"batches": int(v["count"]), "mean_ms": round(1000 * v["sum"] / max(v["count"], 1), 2)}
                for k, v in raw.items()
            }
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            store.drop_project(s)
    return {"model": f"models:/{name}/{version}", "points": points, "batch_size_histogram": batch, "stages": stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each server")
    ap.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    ap.add_argument("--server-arg", action="append", default=[], help="extra model server flag (repeatable)")
    ap.add_argument("--smoke", action="store_true", help="tiny random encoder, 3 s per point (CI: the code paths)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = ap.parse_args()
    if args.smoke:
        args.seconds, args.warmup, args.customers = 3.0, 1.0, 200
    os.environ.update({k: os.environ.get(k, v) for k, v in BENCH_ENV.items()})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mlplatform.config.settings import get_settings
    from mlplatform.stack import process
    from mlplatform.stack.manager import Stack

    stack = Stack(get_settings())
    running = {r.name for r in stack.status() if r.healthy}
    started = [n for n in SERVICES if n not in running]
    stack.up(only=SERVICES)
    try:
        row = run(args)
    finally:
        for svc in reversed(stack.services):
            if svc.name in started:
                process.stop(stack.pid_file(svc))
    top = row["points"][str(max(args.concurrency))]
    met = top["speedup"] >= TARGET_SPEEDUP and top["p99_ratio"] <= 1.0
    report = {
        "benchmark": "serving",
        "peer": "mlflow models serve (--env-manager local, 1 worker) on the same registered version",
        "mode": "smoke" if args.smoke else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "seconds_per_point": args.seconds,
        "torch_threads": args.threads,
        **row,
        "target": f">= {TARGET_SPEEDUP}x throughput and p99 <= peer at concurrency {max(args.concurrency)}",
        "target_met": met,
    }
    parts = []
    for c, p in row["points"].items():
        mine, theirs = p["this_project"], p["peer_mlflow_models_serve"]
        parts.append(
            f"c={c}: {mine['req_per_s']} vs {theirs['req_per_s']} req/s ({p['speedup']}x), "
            f"p99 {mine['p99_ms']} vs {theirs['p99_ms']} ms"
        )
    publish(
        report, args.out, f"serving [{report['mode']}]: " + "; ".join(parts) + f"; target {'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
