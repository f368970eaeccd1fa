"""PSI and KS on known shifts, the verdict with its threshold and minimum, and the prediction log window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlplatform.monitoring.drift import measure, psi, read_predictions

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 20_000)
    assert psi(ref, rng.normal(0, 1, 20_000)) < 0.01
    small, large = psi(ref, rng.normal(0.25, 1, 20_000)), psi(ref, rng.normal(1.0, 1, 20_000))
    assert 0.02 < small < 0.2 < large
    assert psi(np.zeros(100), np.zeros(100)) < 0.01  # a constant column that stays constant
    assert psi(np.zeros(100), np.ones(100)) > 1  # ...and one that moved
    assert np.isnan(psi([], [1.0]))


def frame(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tickets_30d": rng.poisson(3 + shift * 6, n).astype(float),
            "is_enterprise": rng.integers(0, 2, n).astype(float),
            "escalation_probability": np.clip(rng.normal(0.3 + shift * 0.4, 0.1, n), 0, 1),
        }
    )


@pytest.mark.parametrize(("shift", "drifted"), [(0.0, []), (1.0, ["score", "tickets_30d"])])
def test_the_verdict_names_what_drifted(shift, drifted):
    ref, cur = frame(5000, 0, 1), frame(800, shift, 2)
    r = measure(
        ref, ref["escalation_probability"], cur, ["tickets_30d", "is_enterprise"],
        model="m", version="3", since=NOW - timedelta(hours=24), until=NOW,
    )  # fmt: skip
    assert r.enough_data
    assert r.drifted == drifted
    assert set(r.psi) == set(r.ks) == {"tickets_30d", "is_enterprise", "score"}
    assert (r.psi["tickets_30d"] > 0.2) is (shift > 0)
    assert r.psi["is_enterprise"] < 0.05


def test_too_few_predictions_give_no_verdict():
    ref = frame(5000, 0, 1)
    r = measure(ref, None, frame(50, 1.0, 2), ["tickets_30d"], model="m", version="1", since=NOW, until=NOW)
    assert (r.enough_data, r.drifted, r.psi) == (False, [], {})


def test_the_window_reads_only_its_own_days_and_version(tmp_path):
    def write(day: str, rows: list[tuple[str, str]]) -> None:
        d = tmp_path / f"date={day}"
        d.mkdir(exist_ok=True)
        pd.DataFrame(
            [{"served_at": at, "model_version": v, "escalation_probability": 0.5} for at, v in rows]
        ).to_parquet(d / f"part-{len(list(d.iterdir()))}.parquet")

    write("2026-05-30", [("2026-05-30T23:00:00+00:00", "3")])
    write("2026-05-31", [("2026-05-31T13:00:00+00:00", "3"), ("2026-05-31T14:00:00+00:00", "2")])
    write("2026-06-01", [("2026-06-01T11:59:00+00:00", "3"), ("2026-06-01T12:00:00+00:00", "3")])
    got = read_predictions(tmp_path, NOW - timedelta(hours=24), NOW, version="3")
    assert list(got["served_at"]) == ["2026-05-31T13:00:00+00:00", "2026-06-01T11:59:00+00:00"]
    assert read_predictions(tmp_path / "nothing", NOW - timedelta(hours=1), NOW).empty
