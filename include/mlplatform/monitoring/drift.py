"""Drift of what the served model sees and says, against what it was trained and judged on.

Reference: the champion's training snapshot (its features) and its scores on the gate's evaluation set
(``gate/eval_scores.json`` on its run). Current: the predictions the model server logged in a recent window
(``mlplatform.serving.server.PredictionLog``). For each feature and for the score: the population stability
index (PSI, over deciles of the reference) and the two-sample Kolmogorov-Smirnov statistic. Drift is a PSI
above the threshold (0.2 by default: the usual "significant shift") on any of them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlplatform.logs import staged

log = logging.getLogger(__name__)
SCORE = "escalation_probability"


class NoChampion(LookupError):
    """No model serves yet."""


@dataclass
class DriftReport:
    model: str
    version: str
    window_start: str
    window_end: str
    rows: int
    reference_rows: int
    threshold: float
    psi: dict[str, float] = field(default_factory=dict)
    ks: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    enough_data: bool = True
    signal: bool = False  # drifted, and not already signalled for this version and these columns lately
    quiet_because: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def psi(reference: Any, current: Any, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's quantile bins
    (ties collapse bins; a constant reference has one bin, and anything off its value counts as moved)."""
    import numpy as np

    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    if np.ptp(ref) == 0:  # constant reference: the share of current values that left it
        moved = float(np.mean(cur != ref[0]))
        a, b = np.array([1.0, 0.0]), np.array([1.0 - moved, moved])
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
        a = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
        b = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    a, b = np.clip(a, eps, None), np.clip(b, eps, None)
    return float(np.sum((b - a) * np.log(b / a)))


def ks(reference: Any, current: Any) -> float:
    import numpy as np
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    return float(ks_2samp(ref, cur).statistic) if len(ref) and len(cur) else float("nan")


def read_predictions(log_dir: Path, since: datetime, until: datetime, version: str | None = None) -> Any:
    """The logged predictions served in [since, until) (of ``version``, when given)."""
    import pandas as pd

    days = {(since + timedelta(days=i)).date().isoformat() for i in range((until - since).days + 2)}
    files = [f for d in sorted(days) for f in sorted((log_dir / f"date={d}").glob("*.parquet"))]
    if not files:
        return pd.DataFrame()
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    at = pd.to_datetime(df["served_at"], utc=True)
    keep = (at >= pd.Timestamp(since)) & (at < pd.Timestamp(until))
    if version is not None:
        keep &= df["model_version"].astype(str) == str(version)
    return df[keep].reset_index(drop=True)


def measure(
    reference: Any,
    reference_scores: Any,
    current: Any,
    features: list[str],
    *,
    model: str,
    version: str,
    since: datetime,
    until: datetime,
    threshold: float = 0.2,
    min_rows: int = 100,
) -> DriftReport:
    """PSI and KS of each feature and of the score; ``drifted`` names those whose PSI passes ``threshold``.
    With fewer than ``min_rows`` current rows nothing is judged (``enough_data`` false)."""
    report = DriftReport(model, version, since.isoformat(), until.isoformat(), len(current), len(reference), threshold)
    if len(current) < min_rows:
        report.enough_data = False
        return report
    pairs = {f: (reference[f], current[f]) for f in features if f in reference and f in current}
    if reference_scores is not None and SCORE in current:
        pairs["score"] = (reference_scores, current[SCORE])
    for name, (ref, cur) in pairs.items():
        report.psi[name] = round(psi(ref, cur), 6)
        report.ks[name] = round(ks(ref, cur), 6)
    report.drifted = sorted(n for n, v in report.psi.items() if v == v and v > threshold)
    return report


@staged("drift")
def champion_drift(
    s: Any,
    window_hours: float = 24,
    threshold: float = 0.2,
    min_rows: int = 100,
    now: datetime | None = None,
    cooldown_hours: float = 24,
) -> DriftReport:
    """Drift of the champion over the last ``window_hours`` of served predictions, logged to MLflow
    (experiment ``<model>-monitoring``: one run per check, PSI and KS per feature as metrics).

    ``signal`` says whether to start retraining: drift persists from one hourly check to the next, and a
    retrained challenger may lose, so a version's drift on the same columns is signalled once per
    ``cooldown_hours`` (a new column drifting, or a new champion, signals at once)."""
    import json

    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlplatform.serving.deploy import prediction_log_dir

    mlflow.set_tracking_uri(s.mlflow_uri)  # runs:/ artifact URIs resolve against it
    client = MlflowClient(s.mlflow_uri)
    try:
        champ = client.get_model_version_by_alias(s.model_name, "champion")
    except MlflowException as exc:
        raise NoChampion(f"{s.model_name} has no champion") from exc
    run = client.get_run(champ.run_id)
    until = now or datetime.now(UTC)
    since = until - timedelta(hours=window_hours)
    current = read_predictions(prediction_log_dir(s), since, until, version=str(champ.version))
    snapshot = champ.tags.get("data.snapshot_uri") or run.data.tags["dataset_uri"]
    reference = pd.read_parquet(snapshot)  # a file:// or s3:// URI, through fsspec
    try:
        scores = pd.DataFrame(json.loads(mlflow.artifacts.load_text(f"runs:/{champ.run_id}/gate/eval_scores.json")))
        reference_scores = scores[SCORE].to_numpy()
    except Exception as exc:  # noqa: BLE001 - a version registered before the gate logged its scores
        log.warning("no evaluation-set scores on run %s (%s): the score is not compared", champ.run_id, exc)
        reference_scores = None
    served = [c for c in current.columns if c not in ("served_at", "model_version", "customer_id", SCORE)]
    features = [c for c in served if c in reference.columns]  # what the server looked up and the model trained on
    report = measure(
        reference,
        reference_scores,
        current,
        features,
        model=s.model_name,
        version=str(champ.version),
        since=since,
        until=until,
        threshold=threshold,
        min_rows=min_rows,
    )
    experiment = mlflow.set_experiment(f"{s.model_name}-monitoring")
    if report.drifted:
        since_ms = int((until - timedelta(hours=cooldown_hours)).timestamp() * 1000)
        recent = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.version = '{champ.version}' and tags.signalled = 'true' "
            f"and attributes.start_time >= {since_ms}",
            max_results=50,
        )
        seen = {c for r in recent for c in r.data.tags.get("drifted", "").split(",") if c}
        new = sorted(set(report.drifted) - seen)
        report.signal = bool(new)
        if not new:
            report.quiet_because = f"already signalled for version {champ.version} within {cooldown_hours:g} h"
    with mlflow.start_run(run_name=f"drift-v{champ.version}-{until:%Y%m%dT%H%M}"):
        mlflow.set_tags(
            {
                "model": s.model_name,
                "version": str(champ.version),
                "drifted": ",".join(report.drifted),
                "signalled": str(report.signal).lower(),
            }
        )
        mlflow.log_params({"window_hours": window_hours, "threshold": threshold, "rows": report.rows})
        mlflow.log_metrics({f"psi_{k}": v for k, v in report.psi.items() if v == v})
        mlflow.log_metrics({f"ks_{k}": v for k, v in report.ks.items() if v == v})
        mlflow.log_dict(report.to_dict(), "drift_report.json")
    log.info("drift of %s v%s over %d predictions: %s", s.model_name, champ.version, report.rows, report.psi)
    return report
