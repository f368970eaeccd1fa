"""The stack's LocalExecutor with real worker processes. Each workload goes to an execution API that is not
there, so its worker reports a failure after its client gives up (~5 s): a real report through the
executor's result queue, as from a task that ended."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from airflow.executors import workloads
from airflow.executors.local_executor import LocalExecutor as AirflowLocalExecutor
from airflow.executors.workloads.base import BundleInfo
from airflow.executors.workloads.task import TaskInstanceDTO

from mlplatform.pipeline.executor import LocalExecutor


def _workload(ti: TaskInstanceDTO) -> workloads.ExecuteTask:
    return workloads.ExecuteTask(
        ti=ti, dag_rel_path=Path("d.py"), token="t", log_path=None, bundle_info=BundleInfo(name="dags-folder")
    )


@pytest.fixture
def ti() -> TaskInstanceDTO:
    return TaskInstanceDTO(
        id=uuid.uuid4(),
        dag_version_id=uuid.uuid4(),
        dag_id="d",
        task_id="approve",
        run_id=f"r-{uuid.uuid4().hex[:8]}",
        try_number=1,
        map_index=-1,
        pool_slots=1,
        priority_weight=1,
        queue="default",
    )


@pytest.fixture
def no_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://127.0.0.1:9/execution/")


def _started(cls: type[AirflowLocalExecutor]) -> Iterator[Any]:
    executor = cls(parallelism=2)
    executor.start()
    try:
        yield executor
    finally:
        executor.end()


@pytest.fixture
def executor(no_api: None) -> Iterator[LocalExecutor]:
    yield from _started(LocalExecutor)


@pytest.fixture
def airflows_own(no_api: None) -> Iterator[AirflowLocalExecutor]:
    yield from _started(AirflowLocalExecutor)


def _send(executor: AirflowLocalExecutor, ti: TaskInstanceDTO) -> None:
    executor.queue_workload(_workload(ti), session=None)  # type: ignore[arg-type]
    executor.heartbeat()  # hands it to a worker


def test_airflows_own_local_executor_forgets_a_task_once_a_worker_has_it(airflows_own, ti):
    """The defect this executor exists for: the scheduler asks has_task about a resumed task and hears no."""
    _send(airflows_own, ti)
    assert ti.key not in airflows_own.queued_tasks
    assert not airflows_own.has_task(ti)


def test_a_task_is_held_while_any_of_its_workloads_is_out_at_a_worker(executor, ti):
    _send(executor, ti)  # the parked run, whose exit is not reported yet
    assert executor.has_task(ti)
    time.sleep(2)
    _send(executor, ti)  # resumed before that exit is read: the same key again
    assert executor.out_at_workers[ti.key] == 2

    seen = []
    deadline = time.monotonic() + 60
    while executor.out_at_workers[ti.key] and time.monotonic() < deadline:
        executor.sync()
        seen.append((executor.out_at_workers[ti.key], executor.has_task(ti)))
        time.sleep(0.05)
    # the first report (the stale one) leaves the task held; the second lets it go
    assert (1, True) in seen
    assert seen[-1] == (0, False)
    assert ti.key not in executor.out_at_workers
    state, _ = executor.event_buffer[ti.key]
    assert state == "failed"


def _worker_running_a_workload(executor: LocalExecutor, timeout: float = 30) -> psutil.Process:
    """The worker that took the workload: it has the task's supervisor as a child. (Killing an idle worker
    instead would kill it inside the shared queue's read lock, which then stays held: no worker could take
    work again, Airflow's own LocalExecutor included.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in list(executor.workers):
            worker = psutil.Process(pid)
            if worker.children():
                return worker
        time.sleep(0.05)
    raise AssertionError("no worker took the workload")


def test_a_worker_that_dies_holding_a_workload_does_not_hold_its_task_for_ever(executor, ti):
    _send(executor, ti)
    worker = _worker_running_a_workload(executor)
    for task in worker.children(recursive=True):
        task.kill()
    proc = executor.workers[worker.pid]
    proc.kill()  # kill -9 of the worker (its task gone too): no report will come
    proc.join()
    executor.sync()
    assert not executor.has_task(ti)
    assert not executor.out_at_workers
