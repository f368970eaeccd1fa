"""The "Data Docs" extra link of validation tasks, and the ``@data_docs_task`` decorator that gives a TaskFlow
task that link. Airflow-only (imported by DAG files and the plugin).

A task records its validation page in XCom (key ``data_docs``, see ``record_docs``), passing or failing;
when the task ends, Airflow asks the link for its URL and stores it with the task instance, and the UI shows
a "Data Docs" button on it that opens the page served by the API server (``mlplatform.validation.docs``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseOperatorLink
from airflow.sdk.bases.decorator import task_decorator_factory

DATA_DOCS_KEY = "data_docs"
log = logging.getLogger(__name__)


class DataDocsLink(BaseOperatorLink):
    name = "Data Docs"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # In the worker, when the task ends (whatever its state), ``ti_key`` is the running task instance.
        pull = getattr(ti_key, "xcom_pull", None)
        if pull is None:
            return ""
        url = pull(task_ids=ti_key.task_id, key=DATA_DOCS_KEY, map_indexes=ti_key.map_index)
        return str(url or "")


class DataDocsOperator(_PythonDecoratedOperator):
    """``@task`` with the "Data Docs" extra link."""

    operator_extra_links = (DataDocsLink(),)


def data_docs_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    return task_decorator_factory(python_callable=python_callable, decorated_operator_class=DataDocsOperator, **kwargs)


def record_docs(docs: str, keep: bool = True) -> str:
    """Log a validation's Data Docs page as an HTTP address and (``keep``) hold it for the task's extra link."""
    from airflow.sdk import get_current_context

    from mlplatform.config.settings import get_settings
    from mlplatform.pipeline.stages import gx_root
    from mlplatform.validation.docs import http_url

    s = get_settings()
    url = http_url(docs, gx_root(s), s)
    if url:
        log.info("Data Docs: %s", url)
    if url and keep:
        get_current_context()["ti"].xcom_push(key=DATA_DOCS_KEY, value=url)
    return url
