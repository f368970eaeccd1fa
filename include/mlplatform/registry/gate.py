"""MLflow registration with a champion/challenger gate on one shared exam.

Every candidate becomes a registered version with alias ``challenger``. The gate then loads the challenger
*and* the champion from the registry and scores both on the same versioned evaluation set
(``mlplatform.registry.evaluation``): the challenger should take alias ``champion`` only when it wins on the
primary metric by ``min_delta`` without regressing calibration or any slice. The decision, both scores and
the set's hash are stored on the version (tags ``gate.*``) and as ``gate/decision.json`` on its run.

Deciding and promoting are separate steps: ``register_and_gate`` never moves ``champion``; ``promote``
does, through the audit trail (``mlplatform.registry.audit``), after an approval where one is required.
Retrying either is safe: a registered run is not registered twice, scores are recomputed identically, and
a promotion that happened already is not repeated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlplatform.registry.evaluation import EvalSet, GateRules, Scores, judge, load_eval_set, model_input, score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    name: str
    version: str
    promoted: bool  # the gate's verdict: the challenger should become champion
    metric: str
    candidate: float  # the challenger's primary metric on the evaluation set
    champion: float | None  # the champion's, on the same rows
    champion_version: str | None
    reason: str
    eval_set: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    champion_scores: dict[str, Any] | None = None
    failed_checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict_probabilities(model_uri: str, frame: Any) -> Any:
    """The model's escalation probabilities for ``frame`` (a pyfunc from the registry)."""
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    absent = [c for c in (schema.input_names() if schema else []) if c not in frame.columns]
    if absent:  # e.g. a champion trained on features the current evaluation set does not carry
        raise KeyError(f"the evaluation set lacks the model's input columns {absent}")
    out = model.predict(model_input(frame))
    return out["escalation_probability"].to_numpy(dtype="float64")


def register_version(
    client: Any, name: str, run_id: str, model_uri: str, on_registered: Callable[[str], dict[str, str]] | None
) -> str:
    """The run's registered version (created once). ``on_registered(version)``'s tags go on the version and
    the run before any alias can point at it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Support-ticket escalation (mlplatform reference)")
    existing = [v for v in client.search_model_versions(f"name='{name}'") if v.run_id == run_id]
    version = str(existing[0].version if existing else mlflow.register_model(model_uri, name).version)
    for key, value in (on_registered(version) if on_registered else {}).items():
        client.set_model_version_tag(name, version, key, value)
        client.set_tag(run_id, key, value)
    return version


def _scores_on(model_uri: str, frame: Any, rules: GateRules) -> tuple[Scores | None, Any, str]:
    try:
        probs = predict_probabilities(model_uri, frame)
        return score(probs, frame, rules), probs, ""
    except Exception as exc:  # noqa: BLE001 - a model that cannot score the exam is judged by that
        return None, None, f"{type(exc).__name__}: {exc}"


def register_and_gate(
    tracking_uri: str,
    name: str,
    run_id: str,
    model_uri: str,
    eval_set: EvalSet,
    rules: GateRules | None = None,
    on_registered: Callable[[str], dict[str, str]] | None = None,
) -> GateDecision:
    """Register the run's model (once), make it ``challenger``, and judge it against the champion on
    ``eval_set``. Never moves ``champion`` (``promote`` does)."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    rules = rules or GateRules()
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    version = register_version(client, name, run_id, model_uri, on_registered)
    client.set_registered_model_alias(name, "challenger", version)
    try:
        champ = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        champ = None
    champ_version = str(champ.version) if champ is not None else None

    frame = load_eval_set(eval_set.uri, eval_set.sha256)
    mine, probs, error = _scores_on(f"models:/{name}/{version}", frame, rules)
    theirs, warnings = None, []
    if champ_version is not None and champ_version != version:
        theirs, _, champ_error = _scores_on(f"models:/{name}/{champ_version}", frame, rules)
        if theirs is None:
            warnings.append(f"the champion (version {champ_version}) could not be scored: {champ_error}")
        cutoff = client.get_model_version(name, champ_version).tags.get("data.eval_cutoff")
        if cutoff and cutoff > eval_set.start:
            warnings.append(f"the champion trained on rows up to {cutoff}, inside this evaluation set: it is favoured")

    if champ_version == version:
        promoted, reason, failed = True, "already champion (retry)", []
    elif mine is None:
        promoted, reason, failed = False, f"the challenger cannot score the evaluation set: {error}", ["scores"]
    elif champ_version is not None and theirs is None:
        # no comparison was made: never promote on a failed exam of the champion (a person still can)
        promoted, reason = False, f"the champion (version {champ_version}) could not be scored, so nothing was compared"
        failed = ["champion scores"]
    else:
        promoted, reason, failed = judge(mine, theirs, rules)
    decision = GateDecision(
        name=name,
        version=version,
        promoted=promoted,
        metric=rules.metric,
        candidate=float(mine.roc_auc) if mine else float("nan"),
        champion=float(theirs.roc_auc) if theirs else None,
        champion_version=champ_version if champ_version != version else None,
        reason=reason,
        eval_set=eval_set.to_dict(),
        scores=mine.to_dict() if mine else {},
        champion_scores=theirs.to_dict() if theirs else None,
        failed_checks=failed,
        warnings=warnings,
    )
    tags = {
        "gate.decision": "promote" if promoted else "keep",
        "gate.reason": reason[:4000],
        "gate.metric": rules.metric,
        "gate.challenger.roc_auc": str(decision.candidate),
        "gate.challenger.brier": str(mine.brier if mine else "nan"),
        "gate.champion.version": str(decision.champion_version or ""),
        "gate.champion.roc_auc": str(decision.champion if decision.champion is not None else ""),
        "gate.champion.brier": str(theirs.brier if theirs else ""),
        "gate.eval_set.uri": eval_set.uri,
        "gate.eval_set.sha256": eval_set.sha256,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.log_text(run_id, json.dumps({**decision.to_dict(), "rules": asdict(rules)}, indent=2), "gate/decision.json")
    if probs is not None:  # the served score's reference distribution, for drift monitoring
        ref = pd.DataFrame({"ticket_id": frame["ticket_id"], "escalation_probability": probs})
        client.log_text(run_id, ref.to_json(orient="records"), "gate/eval_scores.json")
    log.info("gate: %s", decision)
    return decision


def promote(tracking_uri: str, decision: dict[str, Any], who: str, why: str | None = None) -> dict[str, Any]:
    """Apply a gate decision that said promote: ``champion`` -> its version, recorded in the audit trail.
    Refused (ChampionMovedError) when the champion moved after the gate compared against it."""
    from mlflow import MlflowClient

    from mlplatform.registry import audit

    if not decision["promoted"]:
        return {"changed": False, "reason": "the gate kept the champion: " + decision["reason"]}
    client = MlflowClient(tracking_uri)
    expected = decision.get("champion_version")
    return audit.move(
        client,
        decision["name"],
        decision["version"],
        who=who,
        why=why or f"gate: {decision['reason']} (evaluation set {decision['eval_set'].get('sha256', '')[:12]})",
        kind="promote",
        expect_from=expected if decision["reason"] != "already champion (retry)" else "any",
    )
