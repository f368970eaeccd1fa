from __future__ import annotations

import pytest

from mlplatform.registry.gate import decide


@pytest.mark.parametrize(
    ("candidate", "champion", "delta", "promoted"),
    [
        (0.7, None, 0.0, True),
        (0.8, 0.7, 0.0, True),
        (0.7, 0.7, 0.0, False),
        (0.72, 0.7, 0.05, False),
        (float("nan"), None, 0.0, False),
    ],
)
def test_gate_rule(candidate, champion, delta, promoted):
    assert decide(candidate, champion, delta)[0] is promoted
