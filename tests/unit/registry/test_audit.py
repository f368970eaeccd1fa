"""The alias audit trail on a real MLflow model registry (SQLite backend store, no server)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from mlplatform.registry import audit


@pytest.fixture
def registry(tmp_path):
    client = MlflowClient(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", registry_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path))
    return client


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias("m", "champion").version)


def test_every_move_is_recorded_with_who_and_why_and_a_retry_writes_nothing(registry):
    first = audit.move(registry, "m", "1", who="gate", why="no champion yet", expect_from=None)
    assert (first["changed"], first["from"], first["to"]) == (True, None, "1")
    assert audit.move(registry, "m", "1", who="gate", why="retry")["changed"] is False
    audit.move(registry, "m", "2", who="alice (approval)", why="beats v1", expect_from="1")
    trail = audit.history(registry, "m")
    assert [(r["from"], r["to"], r["who"], r["kind"], r["applied"]) for r in trail] == [
        (None, "1", "gate", "promote", True),
        ("1", "2", "alice (approval)", "promote", True),
    ]
    assert all(r["at"] and r["why"] for r in trail)
    assert champion(registry) == "2"


def test_a_decision_made_against_another_champion_is_refused(registry):
    audit.move(registry, "m", "1", who="gate", why="first")
    with pytest.raises(audit.ChampionMovedError, match="not 2"):
        audit.move(registry, "m", "3", who="gate", why="beats v2", expect_from="2")
    assert champion(registry) == "1"
    assert len(audit.history(registry, "m")) == 1


def test_rollback_walks_back_promotions_and_stops_at_the_first(registry):
    for v in ("1", "2", "3"):
        audit.move(registry, "m", v, who="gate", why=f"v{v}")
    assert audit.rollback(registry, "m", who="bob", why="bad answers")["to"] == "2"
    assert audit.rollback(registry, "m", who="bob", why="still bad")["to"] == "1"
    assert champion(registry) == "1"
    with pytest.raises(audit.RollbackError, match="no earlier version"):
        audit.rollback(registry, "m", who="bob", why="again")
    kinds = [(r["to"], r["kind"], r["who"]) for r in audit.history(registry, "m")]
    assert kinds[-2:] == [("2", "rollback", "bob"), ("1", "rollback", "bob")]
    assert audit.rollback(registry, "m", who="carol", why="pinned", to="3")["to"] == "3"


def test_a_record_whose_alias_move_never_happened_reads_as_not_applied(registry):
    audit.move(registry, "m", "1", who="gate", why="first")
    registry.set_registered_model_alias("m", "champion", "2")  # moved by hand, outside the trail
    (record,) = audit.history(registry, "m")
    assert record["applied"] is False


def test_a_long_reason_is_shortened_to_fit_the_registry_tag(registry):
    why = "ü" * 9000  # non-ASCII: escaped JSON would be six times longer
    audit.move(registry, "m", "1", who="x" * 500, why=why)
    (record,) = audit.history(registry, "m")
    assert record["why"].startswith("üüü")
    assert record["why"].endswith("…")
    assert len(record["who"]) == 200
    raw = next(v for k, v in registry.get_registered_model("m").tags.items() if k.startswith("audit."))
    assert len(raw) <= audit.TAG_LIMIT


def test_a_rollback_never_undoes_a_newer_promotion(registry):
    for v in ("1", "2"):
        audit.move(registry, "m", v, who="gate", why=f"v{v}")
    audit.move(registry, "m", "3", who="gate", why="v3 meanwhile")
    with pytest.raises(audit.ChampionMovedError):
        audit.rollback(registry, "m", who="deploy", why="v2 refused", to="1", expect_from="2")
    assert champion(registry) == "3"
