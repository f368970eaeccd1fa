"""Test settings: an isolated stack (own state dir and ports) so tests never touch a developer's running
stack. The `stack` fixture starts it from an empty state dir and stops it at the end of the session."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
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
    "MLP_SCHEMA_REGISTRY_PORT": "18081",
    "MLP_SPARK_MASTER_PORT": "17077",
    "MLP_SPARK_MASTER_UI_PORT": "18090",
    "MLP_SPARK_WORKER_UI_PORT": "18091",
    "MLP_PROMETHEUS_PORT": "19090",
    "MLP_PUSHGATEWAY_PORT": "19091",
    "MLP_STATSD_PORT": "19125",
    "MLP_STATSD_EXPORTER_PORT": "19102",
    "MLP_PROFILE": "local",
    "GX_ANALYTICS_ENABLED": "False",
    "MLP_K8S_API_PORT": "46443",
    "MLP_K8S_ETCD_PORT": "42379",
    "MLP_K8S_SCHEDULER_PORT": "40259",
    "MLP_K8S_KWOK_PORT": "40250",
    "MLP_POD_LOGS": "false",  # kwok never ends a followed log (the k8s tests' pods run on simulated nodes)
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}
for key, value in TEST_ENV.items():
    os.environ[key] = value
os.environ.pop("MLP_POSTGRES_PASSWORD", None)
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".mlp-test" / "airflow"))
# one INFO line per schema-registry request would bury a failing test's own output (as the CLI does too)
for noisy in ("httpx", "httpx2"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Tests on the Kubernetes control plane run last: in CI its build (about 12 minutes cold) runs in the
    background beside the rest of the suite (`make test`), and their fixture waits for it."""
    items.sort(key=lambda item: item.get_closest_marker("k8s") is not None)


@pytest.fixture(scope="session")
def settings():  # type: ignore[no-untyped-def]
    from mlplatform.config.settings import get_settings

    return get_settings()


def _wipe(root: Path, keep: Path) -> None:
    """Delete everything under ``root`` except ``keep`` (and the directories on the way to it)."""
    for child in root.iterdir():
        if child == keep:
            continue
        if keep.is_relative_to(child) and child.is_dir() and not child.is_symlink():
            _wipe(child, keep)
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _fresh_state_dir(st, settings) -> None:  # type: ignore[no-untyped-def]
    """Stop what an earlier session left running (only processes recorded in the state dir's pid files),
    then empty the state dir: no topic, model, landing file or Feast registry survives into this session.
    Downloaded distributions (MLP_DIST_DIR) are kept should they live inside it."""
    home, dist = settings.home.resolve(), settings.dist_dir.resolve()
    if home.is_relative_to(dist):
        raise RuntimeError(f"the test state dir {home} lies inside MLP_DIST_DIR {dist}; refusing to wipe it")
    st.down()
    if home.exists():
        _wipe(home, dist)


@contextlib.contextmanager
def _session_lock(home: Path) -> Iterator[None]:
    """One session at a time per state dir: two would wipe and restart each other's services."""
    digest = hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"mlp-test-stack-{digest}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.fail(f"another test session is using the stack in {home}", pytrace=False)
        yield


@pytest.fixture(scope="session")
def stack(settings):  # type: ignore[no-untyped-def]
    """The real local stack (Kafka, registry, PostgreSQL, Redis, MLflow, Airflow), fresh for each session and
    stopped at its end. MLP_KEEP_STACK=1 (for a developer): reuse what runs in the test state dir, leave it up."""
    from mlplatform.stack import process
    from mlplatform.stack.manager import Stack

    keep = os.environ.get("MLP_KEEP_STACK", "") not in ("", "0")
    st = Stack(settings)
    with contextlib.ExitStack() as held:
        if not keep:
            held.enter_context(_session_lock(settings.home))
            _fresh_state_dir(st, settings)
        running_before = {s.name for s in st.status() if s.running}
        try:
            st.up()
        except BaseException:
            # a half-started stack: stop what this up() started, leave what ran before (MLP_KEEP_STACK)
            for svc in reversed(st.services):
                if svc.name not in running_before:
                    process.stop(st.pid_file(svc))
            raise
        os.environ["MLP_POSTGRES_PASSWORD"] = settings.pg_password()
        yield st
        from mlplatform.ingest.watch import close_consumers

        close_consumers()  # before the broker goes: a live consumer retries a dead broker forever, loudly
        if not keep:
            st.down()
