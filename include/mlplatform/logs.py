"""Logs with context. Every log line of the library, the training program and the model server is a JSON
object that carries dag_id, run_id, task_id and try_number (inside an Airflow task, or a process it started),
the team, the user where known, the stage and the component. The rendering lives in ``training.logs`` (the
training container ships only that package); this adds what the library knows: which stage a function is,
and who triggered the run.

* Inside an Airflow task, Airflow's task runner writes the JSON lines with the task's ids; :func:`staged`
  binds ``stage``, ``team`` and ``user`` as structlog context variables, which its processors merge in.
* Anywhere else (the model server, the ingest workers, ``mlp``, the training program), :func:`configure`
  renders every record as JSON with the context inherited from the environment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from training.logs import bound, configure, context_from_env

__all__ = ["bound", "configure", "context_from_env", "staged", "triggering_user"]

F = TypeVar("F", bound=Callable[..., Any])


def triggering_user() -> str:
    """Who triggered the running Airflow task's DAG run ('' outside a task, or for a scheduled run)."""
    try:
        from airflow.sdk import get_current_context

        run = get_current_context().get("dag_run")
    except Exception:  # noqa: BLE001 - not in a task (no context), or no Airflow: no user to name
        return ""
    return str(getattr(run, "triggering_user_name", "") or "")


def staged(stage: str) -> Callable[[F], F]:
    """Mark a pipeline stage: every log line written while it runs says ``stage``, the team and the user."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            ctx = context_from_env()
            with bound(stage=stage, team=ctx.get("team", ""), user=ctx.get("user") or triggering_user()):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
