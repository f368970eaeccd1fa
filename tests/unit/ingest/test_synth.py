from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from mlplatform.ingest.synth import URGENT_SUBJECTS, SynthConfig, generate

ANCHOR = datetime(2026, 6, 1, tzinfo=UTC)


def test_same_seed_same_events_and_different_seed_differs():
    a = generate(SynthConfig(events=200, seed=7, anchor=ANCHOR))
    b = generate(SynthConfig(events=200, seed=7, anchor=ANCHOR))
    c = generate(SynthConfig(events=200, seed=8, anchor=ANCHOR))
    assert a == b
    assert a[0] != c[0]


def test_every_ticket_has_one_outcome_after_it():
    tickets, outcomes = generate(SynthConfig(events=300, seed=1, anchor=ANCHOR))
    assert len(tickets) == len(outcomes) == 300
    created = {t["ticket_id"]: t["created_at"] for t in tickets}
    assert all(o["resolved_at"] > created[o["ticket_id"]] for o in outcomes)
    assert all(ANCHOR.replace(day=1, month=5) <= t["created_at"] <= ANCHOR for t in tickets)


def test_urgent_text_carries_escalation_signal():
    tickets, outcomes = generate(SynthConfig(events=4000, seed=3, anchor=ANCHOR))
    esc = {o["ticket_id"]: o["escalated"] for o in outcomes}
    urgent = np.array([t["subject"] in URGENT_SUBJECTS for t in tickets])
    y = np.array([esc[t["ticket_id"]] for t in tickets])
    assert 0.1 < y.mean() < 0.6
    assert y[urgent].mean() > y[~urgent].mean() + 0.2


def test_drift_shifts_the_world_and_zero_drift_is_the_same_stream():
    base, _ = generate(SynthConfig(events=3000, seed=3))
    again, _ = generate(SynthConfig(events=3000, seed=3, drift=0.0))
    assert base == again
    shifted, _ = generate(SynthConfig(events=3000, seed=3, drift=1.0))
    mean = lambda rows: sum(t["priority"] for t in rows) / len(rows)  # noqa: E731
    assert mean(shifted) > mean(base) + 0.5  # more frustrated customers open higher-priority tickets
