"""Who moved an alias, when and why: a durable audit trail kept in the MLflow model registry itself.

Each change of an alias (``champion``) is one tag on the registered model, ``audit.<alias>.<time>.<id>``,
whose value is a JSON record ``{alias, from, to, kind, who, why, at}``. The trail lives where the aliases
live (the registry's database, on every profile), needs no other store, and is read back with the model.
The record is written before the alias moves: a crash in between leaves a record of an intended change
that ``history`` marks ``applied: false`` (the next record, or the alias, does not start where it ends),
never a change nobody recorded.

``kind`` is ``promote`` (a gate, or a person approving one) or ``rollback``. A rollback returns the alias
to the version it held before the current version was last *promoted*, so rolling back twice walks back
two promotions (it does not toggle).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger(__name__)
PREFIX = "audit."
Kind = Literal["promote", "rollback"]


class RollbackError(RuntimeError):
    """There is no earlier version to return to."""


class ChampionMovedError(RuntimeError):
    """The alias moved since the decision being applied was made: it must be made again."""


def _current(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


TAG_LIMIT = 5000  # characters of a registered-model tag value in MLflow's SQL store


def _fit(record: dict[str, Any]) -> str:
    """The record as JSON within the tag limit: ``why`` is shortened (never the rest) until it fits."""
    text = json.dumps(record, ensure_ascii=False)
    while len(text) > TAG_LIMIT:
        cut = max(0, len(record["why"]) - (len(text) - TAG_LIMIT) - 1)
        record = {**record, "why": record["why"][:cut] + "…"}
        text = json.dumps(record, ensure_ascii=False)
    return text


def history(client: Any, name: str, alias: str = "champion") -> list[dict[str, Any]]:
    """The alias's records, oldest first."""
    tags = client.get_registered_model(name).tags or {}
    records = [json.loads(v) for k, v in tags.items() if k.startswith(f"{PREFIX}{alias}.")]
    records.sort(key=lambda r: (r["at"], r["id"]))
    after = [r["from"] for r in records[1:]] + [_current(client, name, alias)]
    return [{**r, "applied": r["to"] == nxt} for r, nxt in zip(records, after, strict=True)]


def move(
    client: Any,
    name: str,
    version: str | None,
    *,
    who: str,
    why: str,
    kind: Kind = "promote",
    alias: str = "champion",
    expect_from: str | None | Literal["any"] = "any",
) -> dict[str, Any]:
    """Point ``alias`` at ``version``, recording it first. Idempotent: when the alias is there already,
    nothing is written (a retried task). ``expect_from``: the version the caller's decision was made
    against; if the alias has moved since, ChampionMovedError (a stale decision is never applied)."""
    current = _current(client, name, alias)
    if version is not None and current == str(version):
        return {"changed": False, "alias": alias, "from": current, "to": current}
    if expect_from != "any" and current != (str(expect_from) if expect_from is not None else None):
        raise ChampionMovedError(
            f"{name}@{alias} is version {current}, not {expect_from} as when the decision was made: decide again"
        )
    at = datetime.now(UTC)
    record = {
        "id": uuid.uuid4().hex[:8],
        "alias": alias,
        "from": current,
        "to": str(version),
        "kind": kind,
        "who": who[:200],
        "why": why,
        "at": at.isoformat(),
    }
    client.set_registered_model_tag(name, f"{PREFIX}{alias}.{at:%Y%m%dT%H%M%S%fZ}.{record['id']}", _fit(record))
    client.set_registered_model_alias(name, alias, str(version))
    log.info("%s@%s: %s -> %s (%s by %s: %s)", name, alias, current, version, kind, who, why)
    return {"changed": True, **record}


def previous(client: Any, name: str, alias: str = "champion") -> str | None:
    """The version the alias held before its current version was last promoted (None: there was none)."""
    current = _current(client, name, alias)
    for record in reversed(history(client, name, alias)):
        if record["kind"] == "promote" and record["applied"] and record["to"] == current:
            return record["from"]
    return None


def rollback(
    client: Any,
    name: str,
    *,
    who: str,
    why: str,
    to: str | None = None,
    alias: str = "champion",
    expect_from: str | None | Literal["any"] = "any",
) -> dict:
    """Return ``alias`` to ``to``, or to the version before the current one's last promotion.
    ``expect_from``: only if the alias still names that version (a rollback never undoes a newer move)."""
    target = str(to) if to is not None else previous(client, name, alias)
    if target is None:
        raise RollbackError(
            f"{name}@{alias} (version {_current(client, name, alias)}) has no earlier version in its audit trail"
        )
    client.get_model_version(name, target)  # fails on an unknown version, before anything is written
    return move(client, name, target, who=who, why=why, kind="rollback", alias=alias, expect_from=expect_from)
