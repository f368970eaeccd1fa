"""The stack's executor: Airflow's LocalExecutor, which also remembers a task whose worker has not reported yet.

A task that parks (``defer()``, or a Human-in-the-loop ``ApprovalOperator`` waiting in AWAITING_INPUT) ends
its worker's run with a success that the scheduler reads a few seconds later. If the task is resumed in
between (a trigger fires, a reviewer answers), the scheduler queues it again at once. When the stale success
then arrives, Airflow 3.3.2's scheduler sees a task that is queued or running, asks the executor whether it
holds that task, and LocalExecutor answers no: it forgets a task as soon as the task is handed to a worker
(its ``running`` set is never filled). The scheduler concludes the task "finished with state success, but
the task instance's state attribute is queued", and sends it to UP_FOR_RETRY. The resumed run is thrown away;
for an approval, the reviewer's answer is lost and the retry asks again. On this stack it happened every time
an answer came within ~5 s of the request (apache/airflow#67287; the fix upstream, #68741, covers a resumed
task that is queued, not one already running, and is not in 3.3.2).

This executor counts the workloads it has handed to workers and not yet heard back from, per task key, and
``has_task`` answers yes while one is out. The stale success then finds the resumed run still held, and the
scheduler lets it finish. A task process that dies is still reported by its worker (the task's supervisor
outlives it), so its count drops to zero and the scheduler handles it as before. A worker process that dies
reports nothing: then every count is dropped, and until the next hand-off the executor answers as the stock
one does (no key is held for ever).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from airflow.executors import workloads
from airflow.executors.local_executor import LocalExecutor as _AirflowLocalExecutor
from airflow.utils.state import TaskInstanceState

if TYPE_CHECKING:
    from airflow.models.taskinstance import TaskInstance

DONE = {TaskInstanceState.SUCCESS, TaskInstanceState.FAILED}


class LocalExecutor(_AirflowLocalExecutor):
    """``AIRFLOW__CORE__EXECUTOR=mlplatform.pipeline.executor.LocalExecutor``: LocalExecutor, with the
    workloads out at workers counted so that a resumed task is never taken for one killed externally."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out_at_workers: Counter[Any] = Counter()

    def start(self) -> None:
        super().start()
        self.out_at_workers.clear()  # an instance can be started again (ExecutorLoader caches instances)

    def _check_workers(self) -> None:
        if any(not proc.is_alive() for proc in self.workers.values()):
            # a dead worker's workload never reports, and which keys it held is unknown
            self.log.warning("a LocalExecutor worker died; releasing %d held task keys", len(self.out_at_workers))
            self.out_at_workers.clear()
        super()._check_workers()

    def _process_workloads(self, workload_list: Any) -> None:
        super()._process_workloads(workload_list)  # raises before counting if a workload was not queued
        for workload in workload_list:
            if isinstance(workload, workloads.ExecuteTask):
                self.out_at_workers[workload.key] += 1

    def change_state(self, key: Any, state: Any, info: Any = None, remove_running: bool = True) -> None:
        if state in DONE and self.out_at_workers[key] > 0:  # a Counter's missing key reads 0, stores nothing
            self.out_at_workers[key] -= 1
            if not self.out_at_workers[key]:
                del self.out_at_workers[key]
        super().change_state(key, state, info, remove_running)

    def has_task(self, task_instance: TaskInstance) -> bool:
        return super().has_task(task_instance) or self.out_at_workers[task_instance.key] > 0
