"""GPU-hours and cost: an estimate before a run starts, the actual figure after, per team and per user.

* Estimate (``check_gpu_ask``, before the pod starts): steps × batch size ÷ the profile's samples/s per
  GPU = wall hours; × GPUs = GPU-hours; × the profile's price = USD. The samples/s come from the latest
  finished MLflow run of that profile (tag ``mlplatform.gpu_profile``), else from the profile's nominal
  figure (``samples_per_second`` in gpu_profiles.yaml), and the estimate says which.
* Actual (``mlp gpu report``): Airflow's own metadata, through its REST API: every task instance that held
  a GPU pool, its duration × ``pool_slots``, the profile from the pool and the team from the team pool
  (or the DAG's owner), the user from the run's ``triggering_user_name``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlplatform.gpu.quota import GpuRequest

log = logging.getLogger(__name__)


def profile_of_pool(pool: str) -> str | None:
    from mlplatform.launch.pods import gpu_profiles

    base = pool.split("__", 1)[0]
    return next((name for name, p in gpu_profiles().items() if p["pool"] == base), None)


def measured_samples_per_s(profile: str, tracking_uri: str, experiment: str) -> tuple[float, str] | None:
    """Per-GPU samples/s of the latest finished run of ``profile`` in MLflow, with its run id."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`mlplatform.gpu_profile` = '{profile}' and attributes.status = 'FINISHED'",
            order_by=["attributes.end_time DESC"],
            max_results=5,
        )
    except Exception as exc:  # noqa: BLE001 - an estimate must not fail the run: fall back to nominal
        log.warning("no measured throughput for %s from MLflow (%s)", profile, exc)
        return None
    for run in runs:
        sps = run.data.metrics.get("samples_per_s")
        world = int(run.data.params.get("world_size", "1") or 1)
        if sps:
            return float(sps) / max(world, 1), f"measured, MLflow run {run.info.run_id}"
    return None


def estimate(req: GpuRequest, conf: Mapping[str, Any], measured: tuple[float, str] | None) -> dict[str, Any]:
    from mlplatform.launch.pods import gpu_profiles

    prof = gpu_profiles()[req.profile]
    sps, source = measured or (float(prof["samples_per_second"]), "nominal, gpu_profiles.yaml")
    steps = int(conf.get("max_steps") or 0)
    out: dict[str, Any] = {
        "profile": req.profile,
        "gpus": req.gpus,
        "team": req.team,
        "samples_per_s_per_gpu": round(sps, 1),
        "throughput_source": source,
        "price_per_gpu_hour": float(prof["price_per_gpu_hour"]),
    }
    if steps <= 0:
        out["note"] = "no estimate: the run has no max_steps (epochs × a data set size known only at train time)"
        return out
    batch = int(conf.get("batch_size") or 32)
    # each of the GPUs processes `batch` samples per step, at `sps` samples/s each
    wall_h = steps * batch * req.gpus / (sps * req.gpus) / 3600
    out.update(
        steps=steps,
        batch_size=batch,
        wall_hours=round(wall_h, 4),
        gpu_hours=round(wall_h * req.gpus, 4),
        usd=round(wall_h * req.gpus * out["price_per_gpu_hour"], 2),
    )
    return out


@dataclass
class Usage:
    dag_id: str
    run_id: str
    task_id: str
    team: str
    user: str
    profile: str
    pool: str
    gpus: int
    seconds: float
    state: str
    estimate_usd: float | None = None

    @property
    def gpu_hours(self) -> float:
        return self.seconds * self.gpus / 3600


def usage(client: Any, since: datetime) -> list[Usage]:
    """Every ended task instance that held a GPU profile's pool since ``since``, from Airflow's REST API."""
    pools = [p["name"] for p in client.paged("/pools", "pools")]
    gpu_pools = [p for p in pools if profile_of_pool(p)]
    if not gpu_pools:
        return []
    params: dict[str, Any] = {"pool": gpu_pools, "end_date_gte": since.isoformat()}
    tis = client.paged("/dags/~/dagRuns/~/taskInstances", "task_instances", params)
    users: dict[tuple[str, str], str] = {}
    owners: dict[str, str] = {}
    out = []
    for ti in tis:
        key = (ti["dag_id"], ti["dag_run_id"])
        if key not in users:
            run = client.request("GET", f"/dags/{key[0]}/dagRuns/{key[1]}")
            users[key] = run.get("triggering_user_name") or run.get("run_type") or "unknown"
        if ti["dag_id"] not in owners:
            owners[ti["dag_id"]] = ",".join(client.request("GET", f"/dags/{ti['dag_id']}").get("owners") or [])
        pool = ti["pool"]
        team = pool.split("__", 1)[1] if "__" in pool else (owners[ti["dag_id"]].split(",")[0] or "unknown")
        est = None
        try:
            xcom = client.xcom(ti["dag_id"], ti["dag_run_id"], "check_gpu_ask")
            est = (xcom or {}).get("estimate", {}).get("usd")
        except Exception:  # noqa: BLE001 - a run without an estimate (another DAG, or max_steps unset)
            est = None
        out.append(
            Usage(
                dag_id=ti["dag_id"],
                run_id=ti["dag_run_id"],
                task_id=ti["task_id"],
                team=team,
                user=users[key],
                profile=profile_of_pool(pool) or "?",
                pool=pool,
                gpus=int(ti["pool_slots"]),
                seconds=float(ti.get("duration") or 0.0),
                state=str(ti["state"]),
                estimate_usd=est,
            )
        )
    return out


def price_of(profile: str) -> float:
    from mlplatform.launch.pods import gpu_profiles

    return float(gpu_profiles()[profile]["price_per_gpu_hour"]) if profile in gpu_profiles() else 0.0


def totals(rows: list[Usage], by: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(team or user, profile) -> (GPU-hours, USD)."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for r in rows:
        key = (getattr(r, by), r.profile)
        hours, usd = out.get(key, (0.0, 0.0))
        out[key] = (hours + r.gpu_hours, usd + r.gpu_hours * price_of(r.profile))
    return out
