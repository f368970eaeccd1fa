"""The gate's exam and its rule: the time-based hold-out, the content-addressed evaluation set, the scores,
and the promote/keep verdict with its guardrails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlplatform.registry.evaluation import (
    GateRules,
    Scores,
    judge,
    load_eval_set,
    score,
    split,
    write_eval_set,
)


def labelled(n: int = 600, days: int = 30, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return pd.DataFrame(
        {
            "ticket_id": [f"T{i:05d}" for i in range(n)],
            "event_timestamp": [start + timedelta(seconds=float(x)) for x in np.sort(rng.uniform(0, days * 86400, n))],
            "plan": rng.choice(["free", "pro", "enterprise"], n),
            "channel": rng.choice(["email", "chat"], n),
            "escalated": rng.integers(0, 2, n),
        }
    )


def test_the_hold_out_is_the_latest_days_and_training_rows_all_precede_it():
    df = labelled()
    train, held, cutoff = split(df)
    assert len(train) + len(held) == len(df)
    assert cutoff.hour == cutoff.minute == 0  # a day boundary
    assert train["event_timestamp"].max() < cutoff <= held["event_timestamp"].min()
    assert 0.2 <= len(held) / len(df) < 0.3  # at least the fraction, by whole days
    _, held7, cutoff7 = split(df, days=7)
    assert cutoff7 == held7["event_timestamp"].max().floor("D") - pd.Timedelta(days=6)


def test_one_day_of_data_cannot_be_split():
    df = labelled(days=1)
    df["event_timestamp"] = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="more than one day"):
        split(df)


def test_the_evaluation_set_is_named_by_its_content_and_checked_on_load(tmp_path):
    _, held, cutoff = split(labelled())
    a = write_eval_set(held, tmp_path, cutoff)
    b = write_eval_set(held.sample(frac=1, random_state=3), tmp_path, cutoff)  # same rows, other order
    assert a == b
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{a.sha256}.parquet"]
    assert (a.rows, a.positives) == (len(held), int(held["escalated"].sum()))
    back = load_eval_set(a.uri, a.sha256)
    assert sorted(back["ticket_id"]) == sorted(held["ticket_id"])
    other = write_eval_set(held.iloc[1:], tmp_path, cutoff)
    assert other.sha256 != a.sha256
    (tmp_path / f"{a.sha256}.parquet").write_bytes((tmp_path / f"{other.sha256}.parquet").read_bytes())
    with pytest.raises(ValueError, match="changed after it was made"):
        load_eval_set(a.uri, a.sha256)


def test_scores_overall_and_per_slice():
    df = labelled(2000)
    y = df["escalated"].to_numpy()
    perfect = score(y * 0.8 + 0.1, df)
    assert perfect.roc_auc == 1.0
    assert perfect.brier == pytest.approx(0.01)
    assert set(perfect.slices) == {"plan=free", "plan=pro", "plan=enterprise", "channel=email", "channel=chat"}
    assert all(v == 1.0 for v in perfect.slices.values())
    coin = score(np.full(len(df), 0.5), df)
    assert coin.roc_auc == 0.5
    with pytest.raises(ValueError, match="NaN or outside"):
        score(np.r_[np.full(len(df) - 1, 0.5), np.nan], df)
    with pytest.raises(ValueError, match="outside"):
        score(np.full(len(df), 1.5), df)


def S(auc: float, brier: float = 0.2, **slices: float) -> Scores:  # noqa: N802 - reads as a value
    return Scores(rows=100, roc_auc=auc, brier=brier, slices={k.replace("_", "="): v for k, v in slices.items()})


@pytest.mark.parametrize(
    ("challenger", "champion", "rules", "promoted", "says"),
    [
        (S(0.7), None, GateRules(), True, "no champion yet"),
        (S(float("nan")), None, GateRules(), False, "NaN"),
        (S(0.8), S(0.7), GateRules(), True, "beats"),
        (S(0.7), S(0.7), GateRules(), False, "does not beat"),
        (S(0.72), S(0.7), GateRules(min_delta=0.05), False, "by 0.05"),
        (S(0.8, brier=0.25), S(0.7, brier=0.2), GateRules(), False, "calibration regresses"),
        (S(0.8, brier=0.205), S(0.7, brier=0.2), GateRules(), True, "no guardrail regressed"),
        (S(0.8, plan_free=0.6), S(0.7, plan_free=0.7), GateRules(), False, "slice plan=free"),
        (S(0.8, plan_free=0.68), S(0.7, plan_free=0.7), GateRules(), True, "beats"),
        (S(0.8, plan_pro=0.5), S(0.7), GateRules(), True, "beats"),  # a slice the champion was not scored on
    ],
)
def test_gate_rule(challenger, champion, rules, promoted, says):
    verdict, reason, failed = judge(challenger, champion, rules)
    assert verdict is promoted, reason
    assert says in reason
    assert bool(failed) is (not promoted)
