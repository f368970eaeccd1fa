from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/integration `integration` (`-m "not integration"` skips them all).

    A `pytestmark` in a conftest applies to nothing, and this hook sees the items of the whole session,
    so it marks only those whose file lies under this directory."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _needs_stack(stack):
    """Every integration test talks to the real services of the session's stack."""
    return stack
