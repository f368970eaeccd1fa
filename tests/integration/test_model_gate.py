"""The gate on the real MLflow server: models registered there, loaded back from the registry and scored on one
evaluation set, a challenger that is truly better (it reads the signal the synthetic data carries) promoted, one
that is truly worse (a coin) or broken (NaN) kept out, and the champion's history in the audit trail."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlplatform.ingest.synth import URGENT_SUBJECTS, SynthConfig, generate
from mlplatform.pipeline import stages
from mlplatform.registry import audit
from mlplatform.registry.evaluation import split, write_eval_set
from mlplatform.registry.gate import register_and_gate


class Keyword(mlflow.pyfunc.PythonModel):
    """Truly informative: urgent subjects escalate far more often in the generator."""

    def predict(self, context, model_input, params=None):  # noqa: ARG002
        p = np.where(model_input["subject"].isin(URGENT_SUBJECTS), 0.7, 0.15)
        return pd.DataFrame({"escalation_probability": p, "escalate": p >= 0.5})


class Coin(mlflow.pyfunc.PythonModel):
    """Truly uninformative: a seeded coin per row."""

    def predict(self, context, model_input, params=None):  # noqa: ARG002
        p = np.random.default_rng(7).uniform(0, 1, len(model_input))
        return pd.DataFrame({"escalation_probability": p, "escalate": p >= 0.5})


class Broken(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # noqa: ARG002
        return pd.DataFrame({"escalation_probability": np.full(len(model_input), np.nan), "escalate": False})


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    # one fixed data set: the coin is a fair coin, so on some draws of the data (6 seeds in 1000) it beats
    # the keyword model on a small slice by more than the gate's tolerance, and the gate is right to refuse
    tickets, outcomes = generate(SynthConfig(events=1500, seed=7))
    escalated = {o["ticket_id"]: int(o["escalated"]) for o in outcomes}
    df = pd.DataFrame(tickets).rename(columns={"created_at": "event_timestamp"})
    df["escalated"] = df.ticket_id.map(escalated)
    _, held, cutoff = split(df)
    return write_eval_set(held, tmp_path_factory.mktemp("eval_sets"), cutoff)


@pytest.fixture
def registered(settings, stack):
    """Log a model of each kind as a run on the real server; returns a function registering one of them."""
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_experiment("it-gate")
    name = f"it_gate_{uuid.uuid4().hex[:6]}"
    uris = {}
    for cls in (Keyword, Coin, Broken):
        with mlflow.start_run(run_name=cls.__name__) as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=cls())
            uris[cls.__name__] = (run.info.run_id, info.model_uri)
    return name, uris


def gate(settings, name, uris, kind, eval_set):
    run_id, uri = uris[kind]
    return register_and_gate(settings.mlflow_uri, name, run_id, uri, eval_set)


def test_a_truly_better_challenger_wins_on_the_shared_set_and_a_worse_one_does_not(settings, registered, eval_set):
    name, uris = registered
    client = MlflowClient(settings.mlflow_uri)
    first = gate(settings, name, uris, "Coin", eval_set)
    assert (first.promoted, first.reason) == (True, "no champion yet")
    stages_promote(settings, first)
    better = gate(settings, name, uris, "Keyword", eval_set)
    assert better.promoted, better.reason
    assert better.champion_version == first.version
    assert better.candidate > better.champion + 0.1  # both scored on the same rows
    assert better.scores["rows"] == better.champion_scores["rows"] == eval_set.rows
    assert set(better.scores["slices"]) >= {"channel=email", "plan=free"}
    tags = client.get_model_version(name, better.version).tags
    assert tags["gate.decision"] == "promote"
    assert tags["gate.eval_set.sha256"] == eval_set.sha256
    assert float(tags["gate.champion.roc_auc"]) == pytest.approx(better.champion)
    stages_promote(settings, better)
    assert client.get_model_version_by_alias(name, "champion").version == better.version

    worse = gate(settings, name, uris, "Coin", eval_set)  # the coin again: its version exists, it loses now
    assert worse.version == first.version
    assert not worse.promoted
    assert "does not beat" in worse.reason
    assert client.get_model_version(name, worse.version).tags["gate.decision"] == "keep"
    assert client.get_model_version_by_alias(name, "challenger").version == worse.version
    assert client.get_model_version_by_alias(name, "champion").version == better.version  # untouched
    assert [(r["from"], r["to"]) for r in audit.history(client, name)] == [
        (None, first.version),
        (first.version, better.version),
    ]


def test_a_model_that_returns_nan_is_kept_out(settings, registered, eval_set):
    name, uris = registered
    stages_promote(settings, gate(settings, name, uris, "Keyword", eval_set))
    broken = gate(settings, name, uris, "Broken", eval_set)
    assert not broken.promoted
    assert "cannot score the evaluation set" in broken.reason
    assert "NaN" in broken.reason


def test_a_stale_decision_is_refused_when_the_champion_moved_meanwhile(settings, registered, eval_set):
    name, uris = registered
    client = MlflowClient(settings.mlflow_uri)
    stages_promote(settings, gate(settings, name, uris, "Coin", eval_set))
    decision = gate(settings, name, uris, "Keyword", eval_set)  # judged against the coin
    client.set_registered_model_alias(name, "champion", decision.version)  # moved by someone else meanwhile...
    client.delete_registered_model_alias(name, "champion")  # ...and then taken away
    with pytest.raises(audit.ChampionMovedError):
        stages_promote(settings, decision)


def stages_promote(settings, decision):
    return stages.promote_champion(
        decision.to_dict(), None, s=settings.model_copy(update={"model_name": decision.name})
    )
