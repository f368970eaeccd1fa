"""Test settings: an isolated stack (own state dir and ports) so tests never touch a developer's running
stack. Services are started by the `stack` fixture and stopped again when the session started them."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_ENV = {
    "MLP_HOME": str(ROOT / ".mlp-test"),
    "MLP_KAFKA_PORT": "19092",
    "MLP_KAFKA_CONTROLLER_PORT": "19093",
    "MLP_POSTGRES_PORT": "15433",
    "MLP_REDIS_PORT": "16380",
    "MLP_MLFLOW_PORT": "15000",
    "MLP_AIRFLOW_PORT": "18080",
    "MLP_SERVING_PORT": "18000",
    "MLP_PROFILE": "local",
    "GX_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}
for key, value in TEST_ENV.items():
    os.environ[key] = value
os.environ.pop("MLP_POSTGRES_PASSWORD", None)
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".mlp-test" / "airflow"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def settings():  # type: ignore[no-untyped-def]
    from mlplatform.config.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def stack(settings):  # type: ignore[no-untyped-def]
    """The real local stack (Kafka, PostgreSQL, Redis, MLflow, Airflow), started once per session."""
    from mlplatform.stack.manager import Stack

    st = Stack(settings)
    already = all(s.healthy for s in st.status())
    st.up()
    os.environ["MLP_POSTGRES_PASSWORD"] = settings.pg_password()
    yield st
    if not already and not os.environ.get("MLP_KEEP_STACK"):
        st.down()
