"""MLflow registration with a champion/challenger gate.

Every candidate becomes a registered version with alias ``challenger``. It takes alias ``champion`` when
there is no champion yet or when it beats the champion's held-out metric. Retrying is safe: a run that was
already registered is not registered twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    name: str
    version: str
    promoted: bool
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(candidate: float, champion: float | None, min_delta: float = 0.0) -> tuple[bool, str]:
    """Pure gate rule. NaN candidates never win."""
    if candidate != candidate:  # NaN
        return False, "candidate metric is NaN"
    if champion is None:
        return True, "no champion yet"
    if candidate > champion + min_delta:
        return True, f"candidate {candidate:.4f} beats champion {champion:.4f}"
    return False, f"candidate {candidate:.4f} does not beat champion {champion:.4f} (+{min_delta})"


def register_and_gate(
    tracking_uri: str,
    name: str,
    run_id: str,
    model_uri: str,
    metric: str = "eval_roc_auc",
    min_delta: float = 0.0,
    on_registered: Callable[[str], dict[str, str]] | None = None,
) -> GateDecision:
    """Register the run's model (once), then gate it. ``on_registered(version)`` runs before any alias moves
    (the version's feature service, say); the tags it returns go on the version and on the run, so a
    version never becomes challenger or champion without them."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Support-ticket escalation (mlplatform reference)")
    existing = [v for v in client.search_model_versions(f"name='{name}'") if v.run_id == run_id]
    version = existing[0].version if existing else mlflow.register_model(model_uri, name).version
    for key, value in (on_registered(str(version)) if on_registered else {}).items():
        client.set_model_version_tag(name, version, key, value)
        client.set_tag(run_id, key, value)
    candidate = float(client.get_run(run_id).data.metrics[metric])
    try:
        champ = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        champ = None
    champ_metric = None
    if champ is not None and champ.run_id and str(champ.version) != str(version):
        champ_metric = client.get_run(champ.run_id).data.metrics.get(metric)
    client.set_registered_model_alias(name, "challenger", version)
    if champ is not None and str(champ.version) == str(version):
        promoted, reason = True, "already champion (retry)"
    else:
        promoted, reason = decide(candidate, champ_metric, min_delta)
    if promoted:
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, "gate", reason)
    decision = GateDecision(
        name, str(version), promoted, metric, candidate, champ_metric, str(champ.version) if champ else None, reason
    )
    log.info("gate: %s", decision)
    return decision
