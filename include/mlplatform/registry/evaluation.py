"""The gate's one exam: a versioned, time-based evaluation set, and the scores both models get on it.

The evaluation set is the latest days of labelled tickets with their point-in-time features (the rows the
training snapshot leaves out), stored once under a name derived from its content (``<sha256>``) and
referenced by URI and hash. Champion and challenger are scored on the same rows; the gate promotes only
when the challenger wins on the primary metric by ``min_delta`` and regresses neither calibration (Brier
score) nor the AUC of any slice (plan, channel) by more than the tolerances.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SLICES = ("plan", "channel")
LABEL = "escalated"
TIME = "event_timestamp"


@dataclass(frozen=True)
class EvalSet:
    uri: str
    sha256: str
    rows: int
    positives: int
    start: str  # the cutoff: every row is at or after it, every training row before it
    end: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateRules:
    metric: str = "roc_auc"
    min_delta: float = 0.0  # the challenger must beat the champion's metric by more than this
    brier_tolerance: float = 0.01  # ...and not be worse calibrated by more than this
    slice_tolerance: float = 0.05  # ...nor lose more AUC than this on any slice both can be scored on
    min_slice_rows: int = 30  # a slice needs this many rows (and both classes) to be judged


@dataclass
class Scores:
    rows: int
    roc_auc: float
    brier: float
    slices: dict[str, float] = field(default_factory=dict)  # "plan=enterprise" -> AUC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holdout_cutoff(times: Any, fraction: float = 0.2, days: int = 0) -> datetime:
    """The start (a UTC midnight) of the evaluation window: the last ``days`` days when given, else the
    latest midnight with at least ``fraction`` of the rows at or after it. Raises when every row would be
    held out or none would."""
    import pandas as pd

    ts = pd.to_datetime(pd.Series(times), utc=True)
    if ts.empty:
        raise ValueError("no labelled rows to hold out from")
    last_day = ts.max().floor("D")
    if days:
        cutoff = last_day - pd.Timedelta(days=days - 1)
    else:
        cutoff = last_day
        while (ts >= cutoff).mean() < fraction and cutoff > ts.min():
            cutoff -= pd.Timedelta(days=1)
    held = int((ts >= cutoff).sum())
    if held == 0 or held == len(ts):
        raise ValueError(
            f"a hold-out from {cutoff.date()} would keep {held} of {len(ts)} rows: the labelled data spans "
            f"{ts.min().date()}..{ts.max().date()}; it needs more than one day of data"
        )
    return datetime.fromtimestamp(cutoff.timestamp(), UTC)


def split(df: Any, fraction: float = 0.2, days: int = 0) -> tuple[Any, Any, datetime]:
    """(training rows, evaluation rows, cutoff): rows before the cutoff train, the rest evaluate."""
    import pandas as pd

    cutoff = holdout_cutoff(df[TIME], fraction, days)
    late = pd.to_datetime(df[TIME], utc=True) >= pd.Timestamp(cutoff)
    return df[~late].reset_index(drop=True), df[late].reset_index(drop=True), cutoff


def _canonical_parquet(df: Any) -> bytes:
    """The same rows give the same bytes: sorted, no index, fixed writer settings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [c for c in ("ticket_id", TIME) if c in df.columns]
    ordered = df.sort_values(keys, kind="mergesort").reset_index(drop=True) if keys else df
    table = pa.Table.from_pandas(ordered, preserve_index=False).replace_schema_metadata(None)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=False, store_schema=False)
    return buf.getvalue()


def write_eval_set(df: Any, root: Path, cutoff: datetime) -> EvalSet:
    """Store the evaluation rows once, content-addressed: ``<root>/<sha256>.parquet``. Writing the same
    rows again (a retry, a later run over the same data) finds the file and changes nothing."""
    import pandas as pd

    data = _canonical_parquet(df)
    digest = hashlib.sha256(data).hexdigest()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{digest}.parquet"
    if not path.exists():
        tmp = path.with_name(f".{digest}.{uuid.uuid4().hex}.tmp")  # two writers of the same rows: both succeed
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    ts = pd.to_datetime(df[TIME], utc=True)
    return EvalSet(
        uri=path.as_uri(),
        sha256=digest,
        rows=len(df),
        positives=int(df[LABEL].sum()),
        start=cutoff.isoformat(),
        end=(ts.max() if len(ts) else cutoff).isoformat(),
    )


def load_eval_set(uri: str, sha256: str) -> Any:
    """The evaluation rows, after checking they are the rows the hash names."""
    import fsspec
    import pandas as pd

    with fsspec.open(uri, "rb") as fh:
        data = fh.read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ValueError(f"evaluation set {uri} has sha256 {got}, not {sha256}: it was changed after it was made")
    return pd.read_parquet(io.BytesIO(data))


def model_input(frame: Any) -> Any:
    """``frame`` as the escalation pyfunc's signature takes it: integer and boolean features as float64
    (Feast returns Int64 counts; MLflow's schema enforcement will not narrow-cast them)."""
    casts = {c: "float64" for c in frame.columns if frame[c].dtype.kind in "iub" and c != LABEL}
    return frame.astype(casts) if casts else frame


def _auc(y: Any, p: Any) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < int(y.sum()) < len(y) else float("nan")


def score(probs: Any, frame: Any, rules: GateRules | None = None) -> Scores:
    """ROC AUC, Brier score and per-slice AUC of ``probs`` on the evaluation rows ``frame``."""
    import numpy as np

    rules = rules or GateRules()
    y = frame[LABEL].to_numpy().astype("float64")
    p = np.asarray(probs, dtype="float64")
    if len(p) != len(y):
        raise ValueError(f"{len(p)} scores for {len(y)} evaluation rows")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        bad = int((~np.isfinite(p) | (p < 0) | (p > 1)).sum())
        raise ValueError(f"{bad} of {len(p)} scores are NaN or outside [0, 1]")
    slices: dict[str, float] = {}
    for col in SLICES:
        if col not in frame.columns:
            continue
        for value in sorted(frame[col].dropna().unique()):
            mask = (frame[col] == value).to_numpy()
            if mask.sum() >= rules.min_slice_rows:
                auc = _auc(y[mask], p[mask])
                if not math.isnan(auc):
                    slices[f"{col}={value}"] = round(auc, 6)
    return Scores(len(y), round(_auc(y, p), 6), round(float(np.mean((p - y) ** 2)), 6), slices)


def judge(challenger: Scores, champion: Scores | None, rules: GateRules | None = None) -> tuple[bool, str, list[str]]:
    """(promote, reason, the checks that failed). Pure: the gate's whole rule."""
    rules = rules or GateRules()
    metric = getattr(challenger, rules.metric)
    if math.isnan(metric):
        return False, f"challenger {rules.metric} is NaN on the evaluation set (one class only?)", [rules.metric]
    if champion is None:
        return True, "no champion yet", []
    failed = []
    theirs = getattr(champion, rules.metric)
    if not math.isnan(theirs) and not metric > theirs + rules.min_delta:
        failed.append(f"{rules.metric} {metric:.4f} does not beat the champion's {theirs:.4f} by {rules.min_delta}")
    if challenger.brier > champion.brier + rules.brier_tolerance:
        failed.append(
            f"calibration regresses: Brier {challenger.brier:.4f} vs the champion's {champion.brier:.4f} "
            f"(tolerance {rules.brier_tolerance})"
        )
    for name, auc in sorted(challenger.slices.items()):
        base = champion.slices.get(name)
        if base is not None and auc < base - rules.slice_tolerance:
            failed.append(
                f"slice {name}: AUC {auc:.4f} vs the champion's {base:.4f} (tolerance {rules.slice_tolerance})"
            )
    if failed:
        return False, "; ".join(failed), failed
    return True, f"{rules.metric} {metric:.4f} beats the champion's {theirs:.4f}, no guardrail regressed", []
