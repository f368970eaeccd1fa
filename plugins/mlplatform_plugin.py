"""mlplatform's Airflow plugin, served by the API server (same host and port as the UI), each with an entry
in the UI's Browse menu:

* the Great Expectations Data Docs site under ``/data-docs`` (validation tasks carry a "Data Docs" extra link
  to their own page, ``mlplatform.pipeline.links``);
* the GPU quota page under ``/gpu-quota``: each pool's size and its source, slots used and queued, the tasks
  holding and waiting, GPU-hours per team (``mlplatform.gpu.quota_page``; it requires the Airflow login).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlplatform.gpu.quota_page import PREFIX as QUOTA_PREFIX
from mlplatform.validation.docs import PREFIX, LazyApp


def _quota_app():  # type: ignore[no-untyped-def]
    from mlplatform.gpu.quota_page import app

    return app()


class MlplatformPlugin(AirflowPlugin):
    name = "mlplatform"
    fastapi_apps = [
        {"app": LazyApp(), "url_prefix": PREFIX, "name": "Great Expectations Data Docs"},
        {"app": LazyApp(_quota_app), "url_prefix": QUOTA_PREFIX, "name": "GPU quota"},
    ]
    external_views = [
        {
            "name": "Data Docs",
            "href": f"{PREFIX.lstrip('/')}/index.html",
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "GPU quota",
            "href": f"{QUOTA_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "category": "browse",
        },
    ]
