"""JSON log lines that say where they come from: every line carries the Airflow task it runs under (dag_id,
run_id, task_id, try_number, from the ``AIRFLOW_CTX_*`` variables Airflow exports to a task's process and its
children), the team (the DAG's owner, or ``MLP_TEAM``), the user where known (``MLP_USER``), the stage
(``MLP_STAGE``, or bound with :func:`bound`) and the component. structlog renders both structlog and stdlib
records, so library, training and server lines read alike.

Inside an Airflow task the task runner already writes JSON lines with the task's ids; binding ``stage`` and
``team`` as structlog context variables adds them to those lines (Airflow's processors merge contextvars).
This module lives in the training package because the training container ships only that package;
``mlplatform.logs`` builds on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import IO, Any

CONTEXT_ENV = {
    "dag_id": "AIRFLOW_CTX_DAG_ID",
    "run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "task_id": "AIRFLOW_CTX_TASK_ID",
    "try_number": "AIRFLOW_CTX_TRY_NUMBER",
    "team": "MLP_TEAM",
    "user": "MLP_USER",
    "stage": "MLP_STAGE",
}


def context_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The log context a process inherits: Airflow's task ids, the team (MLP_TEAM, else the DAG's owner), the
    user and the stage, each only when known."""
    env = os.environ if env is None else env
    out = {key: env[var] for key, var in CONTEXT_ENV.items() if env.get(var)}
    if "team" not in out and env.get("AIRFLOW_CTX_DAG_OWNER"):
        out["team"] = env["AIRFLOW_CTX_DAG_OWNER"]
    return out


def configure(component: str, level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Route every log record of this process (root logger) to one JSON line each on ``stream`` (stderr)."""
    import structlog

    base = {"component": component, **context_from_env()}

    def add_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in base.items():
            event.setdefault(key, value)
        return event

    chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_context,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # library warnings become JSON lines too, not bare stderr text
    structlog.configure(
        processors=[*chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Add ``fields`` (stage, team, user) to every log line written inside the block, in this thread."""
    import structlog

    known = {k: v for k, v in fields.items() if v}
    with structlog.contextvars.bound_contextvars(**known):
        yield
