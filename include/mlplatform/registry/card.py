"""The model card of a registered version: what it was trained on, how it scored on the shared evaluation
set (overall and per slice), what the gate decided, and the lineage back to the landed Kafka ranges.

Written for every version at registration (``model_card/model_card.md`` and ``.json`` on its run, the
Markdown also as the version's description), so the MLflow UI shows it beside the model."""

from __future__ import annotations

import json
from typing import Any


def build(decision: dict[str, Any], snapshot: dict[str, Any], run: Any, lineage: dict[str, Any]) -> dict[str, Any]:
    """The card as data (JSON-serialisable)."""
    params = dict(run.data.params)
    return {
        "model": decision["name"],
        "version": decision["version"],
        "run_id": run.info.run_id,
        "trained": {
            "snapshot_uri": snapshot["uri"],
            "rows": snapshot["rows"],
            "positives": snapshot["positives"],
            "data_window": snapshot.get("window", {}),
            "encoder": params.get("encoder", ""),
            "steps": params.get("max_steps", ""),
            "epochs": params.get("epochs", ""),
        },
        "feature_service": decision.get("feature_service", ""),
        "features": snapshot.get("features", []),
        "evaluation_set": decision.get("eval_set", {}),
        "scores": decision.get("scores", {}),
        "champion_compared": {"version": decision.get("champion_version"), "scores": decision.get("champion_scores")},
        "gate": {
            "promote": decision["promoted"],
            "reason": decision["reason"],
            "failed_checks": decision.get("failed_checks", []),
            "warnings": decision.get("warnings", []),
        },
        "training_metrics": {k: v for k, v in run.data.metrics.items() if k.startswith("eval_")},
        "lineage": lineage,
    }


def markdown(card: dict[str, Any]) -> str:
    s, c = card.get("scores") or {}, (card.get("champion_compared") or {})
    cs = c.get("scores") or {}
    es, tr, gate = card["evaluation_set"], card["trained"], card["gate"]
    lines = [
        f"# {card['model']} version {card['version']}",
        "",
        f"**Gate:** {'promote' if gate['promote'] else 'keep the champion'}: {gate['reason']}",
        *[f"- warning: {w}" for w in gate["warnings"]],
        "",
        "## Data",
        f"- training snapshot: `{tr['snapshot_uri']}` ({tr['rows']} rows, {tr['positives']} escalated)",
        f"- training window: {tr['data_window'].get('start', '?')} .. {tr['data_window'].get('end', '?')}",
        f"- evaluation set: `{es.get('uri', '')}` sha256 `{es.get('sha256', '')}` ({es.get('rows', 0)} rows from "
        f"{es.get('start', '?')} to {es.get('end', '?')})",
        f"- feature service: `{card['feature_service']}` ({', '.join(card['features'])})",
        "",
        "## Scores on the evaluation set",
        f"| | this version | champion (v{c.get('version') or '-'}) |",
        "|---|---|---|",
        f"| ROC AUC | {s.get('roc_auc', '')} | {cs.get('roc_auc', '')} |",
        f"| Brier | {s.get('brier', '')} | {cs.get('brier', '')} |",
    ]
    for name in sorted(set(s.get("slices", {})) | set(cs.get("slices", {}))):
        lines.append(f"| AUC {name} | {s.get('slices', {}).get(name, '')} | {cs.get('slices', {}).get(name, '')} |")
    lines += ["", "## Lineage (landed Kafka ranges)"]
    for topic, info in sorted(card["lineage"].items()):
        spans = ", ".join(f"p{p} [{a}, {b})" for p, (a, b) in sorted(info["partitions"].items()))
        lines.append(f"- `{topic}`: {info['batches']} validated batches, {info['rows']} rows; offsets {spans}")
    return "\n".join(lines) + "\n"


def attach(client: Any, card: dict[str, Any]) -> str:
    """Log the card on the version's run and make it the version's description; returns its artifact URI."""
    md = markdown(card)
    run_id = card["run_id"]
    client.log_text(run_id, md, "model_card/model_card.md")
    client.log_text(run_id, json.dumps(card, indent=2, default=str), "model_card/model_card.json")
    client.update_model_version(card["model"], card["version"], description=md[:5000])
    uri = f"runs:/{run_id}/model_card/model_card.md"
    client.set_model_version_tag(card["model"], card["version"], "model_card", uri)
    return uri
