"""From the gate's decision to a new champion, with a person in the loop where the run asks for one.
Airflow-only wiring shared by ``ml_pipeline`` and ``train_model`` (imported by DAG files):

    register ─► route ─┬─► approve (HITL ApprovalOperator) ─► promote
                       └──────────────────────────────────────► promote

``route`` (a branch) goes nowhere when the gate kept the champion, to ``approve`` when the run's Param
``require_approval`` is on, else straight to ``promote``. ``approve`` waits (parked as ``awaiting_input``,
no worker slot) for a reviewer in the UI or through the REST API; a rejection skips ``promote``, so the
champion stays, and a reviewer who never answers counts as a rejection after ``response_timeout``.
``promote`` records the approver (or the gate) in the audit trail as it moves the alias."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

REVIEW_BODY = """\
**{{ ti.xcom_pull(task_ids='register')['name'] }} version {{ ti.xcom_pull(task_ids='register')['version'] }}**
would replace champion version {{ ti.xcom_pull(task_ids='register')['champion_version'] or '(none)' }}.

Gate: {{ ti.xcom_pull(task_ids='register')['reason'] }}

| on the shared evaluation set | challenger | champion |
|---|---|---|
| ROC AUC | {{ ti.xcom_pull(task_ids='register')['candidate'] }} | {{ ti.xcom_pull(task_ids='register')['champion'] }} |

Evaluation set sha256 `{{ ti.xcom_pull(task_ids='register')['eval_set']['sha256'] }}`;
model card `{{ ti.xcom_pull(task_ids='register')['model_card'] }}`.
"""


def gate_to_champion(decision: Any, outlets: list[Any] | None = None, response_timeout_days: float = 3) -> Any:
    """Wire route → approve → promote after ``decision`` (the register task's output); returns ``promote``."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator
    from airflow.sdk import get_current_context, task

    @task.branch(task_id="route")
    def route(decision: dict) -> list[str]:
        from mlplatform.config.settings import get_settings
        from mlplatform.pipeline.stages import promotion_route

        # a run may ask for an approval; where the platform requires one (MLP_REQUIRE_APPROVAL, the cluster
        # profile), no run's Params can switch it off
        asked = bool(get_current_context()["params"].get("require_approval", False))
        return promotion_route(decision, asked or get_settings().approval_required)

    approve = ApprovalOperator(
        task_id="approve",
        subject="Promote {{ ti.xcom_pull(task_ids='register')['name'] }} "
        "v{{ ti.xcom_pull(task_ids='register')['version'] }} to champion?",
        body=REVIEW_BODY,
        defaults="Reject",  # no answer within the timeout: the champion stays
        response_timeout=timedelta(days=response_timeout_days),
    )

    @task(task_id="promote", trigger_rule="none_failed_min_one_success", outlets=outlets or [])
    def promote(decision: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from mlplatform.pipeline.stages import promote_champion
        from mlplatform.registry.audit import ChampionMovedError

        try:
            return promote_champion(decision, get_current_context()["ti"].xcom_pull(task_ids="approve"))
        except ChampionMovedError as exc:  # a retry would apply the same stale decision: fail now
            raise AirflowFailException(str(exc)) from exc

    branch = route(decision)
    promoted = promote(decision)
    branch >> approve >> promoted
    branch >> promoted
    return promoted
