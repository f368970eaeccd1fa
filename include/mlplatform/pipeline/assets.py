"""Asset URIs of the stage hand-offs (plain strings: DAG files wrap them in airflow.sdk.Asset)."""

from __future__ import annotations

LANDING = "mlp://landing/support"
VALIDATED = "mlp://validated/support"
FEATURES = "mlp://feast/escalation_features"
CANDIDATE = "mlp://mlflow/ticket_escalation/candidate"
CHAMPION = "mlp://mlflow/ticket_escalation/champion"
SERVED = "mlp://serving/ticket_escalation"
DRIFT = "mlp://monitoring/ticket_escalation/drift"
SCORES = "mlp://scores/ticket_escalation"

OWNER = "support-ml"


def default_args() -> dict[str, object]:
    """default_args for every DAG: owner and retries (Airflow retries, not home-made loops)."""
    from datetime import timedelta

    return {"owner": OWNER, "retries": 2, "retry_delay": timedelta(seconds=20)}
