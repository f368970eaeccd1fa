"""The guard around librdkafka's blocking transactional calls (one can hang past its own timeout), and the
split of a run's record budget between partitions."""

from __future__ import annotations

import threading

import pytest

from mlplatform.ingest import consume
from mlplatform.ingest.consume import StuckClientError, bounded
from mlplatform.ingest.kafka import split_budget


def test_a_call_that_returns_gives_its_value_and_one_that_raises_raises_its_error():
    assert bounded("add", 1, lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(KeyError, match="gone"):
        bounded("fail", 1, lambda: {}["gone"])


def test_a_call_hanging_past_its_timeout_and_the_grace_raises_naming_the_call(monkeypatch):
    monkeypatch.setattr(consume, "STUCK_GRACE_S", 0.2)
    release = threading.Event()
    try:
        with pytest.raises(StuckClientError, match="send_offsets_to_transaction did not return"):
            bounded("send_offsets_to_transaction", 0.1, release.wait)
    finally:
        release.set()


def test_a_budget_is_split_in_proportion_to_lag_and_adds_up_exactly():
    assert split_budget(100, {0: 10, 1: 20}) == {0: 10, 1: 20}  # everything fits
    shares = split_budget(10, {0: 1, 1: 1, 2: 1, 3: 1000})
    assert sum(shares.values()) == 10
    assert shares[3] >= 9
    shares = split_budget(7, {0: 3, 1: 3, 2: 3})
    assert sum(shares.values()) == 7
    assert sorted(shares.values()) == [2, 2, 3]
    assert all(shares[p] <= lag for p, lag in {0: 3, 1: 3, 2: 3}.items())
