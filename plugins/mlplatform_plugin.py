"""mlplatform's Airflow plugin: the Great Expectations Data Docs site served by the API server under
``/data-docs`` (same host and port as the UI), with a "Data Docs" entry in the UI's navigation. Validation
tasks carry a "Data Docs" extra link to their own page (``mlplatform.pipeline.links``)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlplatform.validation.docs import PREFIX, LazyApp


class MlplatformPlugin(AirflowPlugin):
    name = "mlplatform"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": PREFIX, "name": "Great Expectations Data Docs"}]
    external_views = [
        {
            "name": "Data Docs",
            "href": f"{PREFIX.lstrip('/')}/index.html",
            "destination": "nav",
            "category": "browse",
        }
    ]
