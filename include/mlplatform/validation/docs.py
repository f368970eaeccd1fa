"""Data Docs over HTTP: the GX project's static site (``<gx root>/gx/uncommitted/data_docs/local_site``) served
by the Airflow API server under ``/data-docs`` (plugins/mlplatform_plugin.py), and the HTTP address of a
validation's page (what the task log prints and the task's "Data Docs" extra link opens).

The site is plain files that GX writes; serving them from the API server means no extra service and the
same host and port as the UI that links to them."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlplatform.config.settings import Settings

PREFIX = "/data-docs"
SITE = "local_site"


def site_dir(gx_root: Path) -> Path:
    """The local site of the file-mode GX project at ``gx_root`` (GX keeps its project in ``gx/`` there)."""
    return gx_root / "gx" / "uncommitted" / "data_docs" / SITE


def base_url(s: Settings) -> str:
    """Where the Airflow API server answers (``AIRFLOW__API__BASE_URL`` when set, else the stack's)."""
    return (os.environ.get("AIRFLOW__API__BASE_URL") or s.airflow_url).rstrip("/")


def http_url(docs: str, gx_root: Path, s: Settings) -> str:
    """The HTTP address of a Data Docs page given as GX's ``file://`` URL; "" when it is not in the site."""
    from mlplatform.validation.suites import uri_to_path

    if not docs:
        return ""
    try:
        rel = uri_to_path(docs).resolve().relative_to(site_dir(gx_root).resolve())
    except ValueError:
        return ""
    return f"{base_url(s)}{PREFIX}/{quote(rel.as_posix())}"


def app(gx_root: Path) -> Any:
    """A FastAPI app serving the site read-only (``index.html`` at the root). The directory may not exist
    yet (no validation ran): it is created, and pages appear as GX writes them."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    root = site_dir(gx_root)
    root.mkdir(parents=True, exist_ok=True)
    api = FastAPI(title="Great Expectations Data Docs", docs_url=None, redoc_url=None, openapi_url=None)
    api.mount("/", StaticFiles(directory=root, html=True), name="data-docs")
    return api


class LazyApp:
    """An ASGI app built by ``factory`` on its first request: the plugin module is imported by every Airflow
    component, and only the API server ever serves a page. Default: the Data Docs site."""

    def __init__(self, factory: Any = None) -> None:
        self._factory = factory or _docs_app
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


def _docs_app() -> Any:
    from mlplatform.config.settings import get_settings
    from mlplatform.pipeline.stages import gx_root

    return app(gx_root(get_settings()))


_template_cache: contextvars.ContextVar[Any] = contextvars.ContextVar("mlp_gx_template_cache", default=None)


@contextlib.contextmanager
def cached_templates(gx_root: Path | None) -> Iterator[None]:
    """Within the block, GX's Data Docs templates are kept compiled on disk in the project at ``gx_root``
    (nothing to keep for an ephemeral project: ``None``).

    GX builds a new Jinja environment for each page it renders, so each build compiled the same templates
    again: 0.3 s of the 0.4 s it took to render a run's page, its suite's page and the index, and every
    validate task is a new process. Jinja's own ``FileSystemBytecodeCache`` (keyed by each template's
    source checksum, written atomically) makes that a load; GX's output is unchanged. The cache is this
    block's (a context variable: another thread or project renders without it, or with its own)."""
    if gx_root is None:
        yield
        return
    from great_expectations.render.view.view import DefaultJinjaView
    from jinja2 import FileSystemBytecodeCache

    where = gx_root / "gx" / "uncommitted" / "jinja_cache"
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not getattr(DefaultJinjaView.__init__, "_mlp_cached", False):
        init = DefaultJinjaView.__init__

        def cached_init(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.env.bytecode_cache = _template_cache.get()

        cached_init._mlp_cached = True  # type: ignore[attr-defined]
        DefaultJinjaView.__init__ = cached_init  # type: ignore[method-assign]
    token = _template_cache.set(FileSystemBytecodeCache(str(where)))
    try:
        yield
    finally:
        _template_cache.reset(token)
