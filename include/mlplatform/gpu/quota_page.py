"""The GPU quota page of the Airflow UI (Browse → GPU quota), served by the API server through the plugin in
``plugins/``: every pool (GPU pools first) with its size and where the size came from, the slots in use,
queued, scheduled and deferred, the tasks holding and waiting for slots, and the GPU-hours each team used in
the last seven days (task duration × ``pool_slots`` in GPU pools; the team is the DAG's owner) and what they
cost at the profile's ``price_per_gpu_hour``.

It reads Airflow's metadata database with Airflow's own models and requires the Airflow login: the UI's
session cookie (or a bearer token), with permission to read pools. A browser without a session is sent to
the login page; an API client gets 401.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

PREFIX = "/gpu-quota"
HOLDING = ("running", "deferred")
WAITING = ("queued", "scheduled")


@dataclass
class PoolView:
    name: str
    slots: int
    source: str  # where the size came from (the pool's description)
    gpu: bool
    include_deferred: bool
    used: int = 0
    queued: int = 0
    scheduled: int = 0
    deferred: int = 0
    open: int = 0
    holding: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)


def is_gpu_pool(name: str) -> bool:
    return name.startswith("gpu_")


def _ti_row(ti: Any) -> dict[str, Any]:
    since = ti.start_date or ti.queued_dttm or ti.scheduled_dttm or ti.updated_at
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "state": str(ti.state.value if hasattr(ti.state, "value") else ti.state),
        "pool_slots": ti.pool_slots,
        "priority_weight": ti.priority_weight,
        "priority": priority_level(ti.priority_weight),
        "since": since.isoformat() if since else None,
    }


def priority_level(weight: int | None) -> str:
    """The run's priority level from its task's weight (gpu/quota.py: high 100, normal 10, low 1), else the
    raw weight (a non-GPU task's, which Airflow sums over its downstream tasks)."""
    from mlplatform.gpu.quota import PRIORITY_WEIGHTS

    levels = {w: level for level, w in PRIORITY_WEIGHTS.items()}
    return levels.get(weight or 0, f"weight {weight}")


def pools(session: Any) -> list[PoolView]:
    """Every pool with its occupancy and the task instances holding or waiting for its slots."""
    from airflow.models.pool import Pool
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    stats = Pool.slots_stats(session=session)
    views: dict[str, PoolView] = {}
    for pool in session.scalars(select(Pool)):
        st = stats.get(pool.pool, {})
        views[pool.pool] = PoolView(
            name=pool.pool,
            slots=pool.slots,
            source=pool.description or "",
            gpu=is_gpu_pool(pool.pool),
            include_deferred=bool(pool.include_deferred),
            used=int(st.get("running", 0)),
            queued=int(st.get("queued", 0)),
            scheduled=int(st.get("scheduled", 0)),
            deferred=int(st.get("deferred", 0)),
            open=int(st.get("open", 0)) if st.get("open", 0) != float("inf") else -1,
        )
    tis = session.scalars(
        select(TaskInstance)
        .where(TaskInstance.state.in_([*HOLDING, *WAITING]))
        .order_by(TaskInstance.priority_weight.desc(), TaskInstance.scheduled_dttm)
    )  # the order Airflow starts them in: the highest weight first, then the oldest
    for ti in tis:
        view = views.get(ti.pool)
        if view is None:
            continue
        row = _ti_row(ti)
        (view.holding if row["state"] in HOLDING else view.waiting).append(row)
    return sorted(views.values(), key=lambda v: (not v.gpu, v.name))


def gpu_hours_by_team(session: Any, since: datetime) -> dict[str, dict[str, float]]:
    """GPU-hours per team and GPU pool of the task instances that ended since ``since`` (duration × slots)."""
    from airflow.models.dag import DagModel
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    rows = session.execute(
        select(TaskInstance.pool, TaskInstance.pool_slots, TaskInstance.duration, DagModel.owners)
        .join(DagModel, DagModel.dag_id == TaskInstance.dag_id)
        .where(TaskInstance.pool.like("gpu\\_%", escape="\\"), TaskInstance.end_date >= since)
    )
    out: dict[str, dict[str, float]] = {}
    for pool, slots, duration, owners in rows:
        # a team's own pool names the team; a shared pool counts for the DAG's owner
        team = pool.split("__", 1)[1] if "__" in pool else (owners or "unknown").split(",")[0].strip() or "unknown"
        hours = (duration or 0.0) * (slots or 1) / 3600
        out.setdefault(team, {}).setdefault(pool, 0.0)
        out[team][pool] += hours
    return out


def prices() -> dict[str, float]:
    """USD per GPU-hour of each profile's pool (``price_per_gpu_hour`` in gpu_profiles.yaml)."""
    from mlplatform.launch.pods import gpu_profiles

    return {p["pool"]: float(p["price_per_gpu_hour"]) for p in gpu_profiles().values() if "price_per_gpu_hour" in p}


def profile_pool_of(pool: str) -> str:
    """A team's pool (``gpu_h100__search``) is priced as its profile's pool (``gpu_h100``)."""
    return pool.split("__", 1)[0]


def cost_by_team(hours: dict[str, dict[str, float]], price: dict[str, float]) -> dict[str, float | None]:
    """USD per team: GPU-hours × the pool's price; None for a team whose hours include an unpriced pool."""
    out: dict[str, float | None] = {}
    for team, by_pool in hours.items():
        priced = [h * price[profile_pool_of(p)] for p, h in by_pool.items() if profile_pool_of(p) in price]
        out[team] = round(sum(priced), 2) if len(priced) == len(by_pool) else None
    return out


def report(session: Any, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    since = now - timedelta(days=7)
    hours = gpu_hours_by_team(session, since)
    price = prices()
    return {
        "generated_at": now.isoformat(),
        "pools": [asdict(v) for v in pools(session)],
        "gpu_hours_since": since.isoformat(),
        "gpu_hours": hours,
        "prices": price,
        "cost_usd": cost_by_team(hours, price),
    }


def _tasks(rows: list[dict[str, Any]], base: str) -> str:
    if not rows:
        return "<span class='none'>none</span>"
    items = []
    for r in rows:
        link = f"{base}/dags/{html.escape(r['dag_id'])}/runs/{html.escape(r['run_id'])}"
        label = f"{r['dag_id']} / {r['task_id']}" + (f"[{r['map_index']}]" if r["map_index"] >= 0 else "")
        items.append(
            f"<li><a href='{link}'>{html.escape(label)}</a> <span class='state {r['state']}'>{r['state']}</span>"
            f" {r['pool_slots']} slot(s) · <span class='priority'>{html.escape(str(r.get('priority', '')))}</span>"
            f" · run {html.escape(r['run_id'])}</li>"
        )
    return "<ul>" + "".join(items) + "</ul>"


def render(doc: dict[str, Any], base: str) -> str:
    """The page: one table row per pool, then GPU-hours per team."""
    rows = []
    for p in doc["pools"]:
        size = "unlimited" if p["slots"] == -1 else str(p["slots"])
        rows.append(
            f"<tr class='{'gpu' if p['gpu'] else 'other'}' data-pool='{html.escape(p['name'])}'>"
            f"<td class='name'>{html.escape(p['name'])}</td><td>{size}</td><td>{html.escape(p['source'])}</td>"
            f"<td>{p['used']}</td><td>{p['queued'] + p['scheduled']}</td><td>{p['deferred']}"
            f"{' (counted)' if p['include_deferred'] else ''}</td><td>{p['open']}</td>"
            f"<td>{_tasks(p['holding'], base)}</td><td>{_tasks(p['waiting'], base)}</td></tr>"
        )

    def usd(pool: str, h: float) -> str:
        price = doc["prices"].get(pool)
        return f"${h * price:,.2f}" if price is not None else "no price set"

    hours = [
        f"<tr><td>{html.escape(team)}</td><td>{html.escape(pool)}</td><td>{h:.2f}</td><td>{usd(pool, h)}</td></tr>"
        for team, by_pool in sorted(doc["gpu_hours"].items())
        for pool, h in sorted(by_pool.items())
    ] or ["<tr><td colspan='4' class='none'>no GPU task ended in the last 7 days</td></tr>"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GPU quota · mlplatform</title>
<meta http-equiv="refresh" content="10">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2937; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 2rem; }}
th, td {{ border-bottom: 1px solid #e5e7eb; padding: .4rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f4f6; }} tr.gpu td.name {{ font-weight: 600; }} .none {{ color: #9ca3af; }}
ul {{ margin: 0; padding-left: 1rem; }} .state {{ font-size: .8rem; padding: 0 .3rem; border-radius: 3px;
background: #e5e7eb; }} .running {{ background: #bbf7d0; }} .queued, .scheduled {{ background: #fde68a; }}
</style></head><body>
<h1>GPU quota</h1>
<p>Airflow pools are the quota: a task holds <code>pool_slots</code> equal to its GPUs while it runs. Waiting
tasks are listed in the order Airflow starts them: priority high (weight 100), normal (10), low (1), then the
oldest first; a team's share is its own pool, so only its own higher-priority work runs before it. Updated
{html.escape(doc["generated_at"])} (refreshes every 10 s). <a href="{PREFIX}/api/pools">JSON</a></p>
<table id="pools"><thead><tr><th>Pool</th><th>Size</th><th>Where the size comes from</th><th>Used</th>
<th>Queued</th><th>Deferred</th><th>Free</th><th>Holding</th><th>Waiting</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>GPU-hours by team, last 7 days</h2>
<table id="gpu-hours"><thead><tr><th>Team</th><th>Pool</th><th>GPU-hours</th><th>Cost</th></tr></thead>
<tbody>{"".join(hours)}</tbody></table>
</body></html>"""


def app() -> Any:
    """The FastAPI app the plugin mounts at ``/gpu-quota``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import requires_access_pool
    from airflow.utils.session import create_session
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

    api = FastAPI(title="GPU quota", docs_url=None, redoc_url=None, openapi_url=None)
    allowed = [Depends(requires_access_pool("GET"))]

    # registered by call, not decorator: annotations are strings here, and Request is imported lazily
    async def to_login(request: Request, exc: Exception) -> Any:
        if not isinstance(exc, HTTPException):  # only HTTPException is routed here
            raise exc
        wants_page = "text/html" in request.headers.get("accept", "") and not request.url.path.endswith("/api/pools")
        if exc.status_code == 401 and wants_page:
            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    api.add_exception_handler(HTTPException, to_login)

    @api.get("/api/pools", dependencies=allowed)
    def pools_json() -> dict[str, Any]:
        with create_session() as session:
            return report(session)

    @api.get("/", response_class=HTMLResponse, dependencies=allowed)
    def page() -> str:
        from mlplatform.config.settings import get_settings
        from mlplatform.validation.docs import base_url

        with create_session() as session:
            return render(report(session), base_url(get_settings()))

    return api
