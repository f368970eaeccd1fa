from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _needs_stack(stack):
    """Every integration test talks to the real services of the session's stack."""
    return stack
