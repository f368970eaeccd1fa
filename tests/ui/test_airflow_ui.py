"""A person's path through the Airflow UI in headless Chromium (Debian's): log in, open ml_pipeline,
trigger it from the Params form, and see the run start."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from mlplatform.stack.airflow_api import AirflowClient

pytestmark = pytest.mark.ui
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".mlp-test" / "ui"


@pytest.fixture
def page(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def test_anonymous_visitor_is_sent_to_login(page, settings):
    page.goto(f"{settings.airflow_url}/dags/ml_pipeline")
    page.wait_for_url("**/auth/login**")
    assert page.get_by_role("button", name="Sign in").is_visible()


def test_trigger_ml_pipeline_from_the_params_form(page, settings, stack):
    client = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    client.wait_for_dag("ml_pipeline")
    before = {r["dag_run_id"] for r in client.request("GET", "/dags/ml_pipeline/dagRuns")["dag_runs"]}

    page.goto(settings.airflow_url)
    page.get_by_label("Username").fill(settings.airflow_admin)
    page.get_by_label("Password").fill(stack.admin_password())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)

    page.goto(f"{settings.airflow_url}/dags/ml_pipeline")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    assert dialog.get_by_text("Synthetic ticket events to produce to Kafka first").is_visible()
    dialog.locator('input[name="element_events"]').fill("57")
    dialog.locator('input[name="element_max_steps"]').fill("1")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "trigger_form.png"))
    dialog.get_by_role("button", name="Trigger", exact=True).click()

    new_run = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and new_run is None:
        runs = client.request("GET", "/dags/ml_pipeline/dagRuns")["dag_runs"]
        new_run = next((r for r in runs if r["dag_run_id"] not in before), None)
        time.sleep(1)
    assert new_run is not None, "the form did not create a run"
    assert new_run["conf"]["events"] == 57
    assert new_run["conf"]["max_steps"] == 1
    assert new_run["run_type"] == "manual"

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.run_state("ml_pipeline", new_run["dag_run_id"])
        if state in {"running", "success"}:
            break
        time.sleep(2)
    assert state in {"running", "success"}
    page.goto(f"{settings.airflow_url}/dags/ml_pipeline/runs/{new_run['dag_run_id']}")
    page.get_by_text(new_run["dag_run_id"]).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "run_started.png"))
    # leave no work behind for the rest of the session
    client.request("PATCH", f"/dags/ml_pipeline/dagRuns/{new_run['dag_run_id']}", json={"state": "failed"})


def _login(page, settings, stack) -> None:  # type: ignore[no-untyped-def]
    page.goto(settings.airflow_url)
    page.get_by_label("Username").fill(settings.airflow_admin)
    page.get_by_label("Password").fill(stack.admin_password())
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Dags").first.wait_for()


def test_data_docs_are_in_the_browse_menu_and_served_by_the_api_server(page, settings, stack, tmp_path):
    """The nav's Browse menu has Data Docs; following it opens the GX site from the API server itself."""
    _login(page, settings, stack)
    page.get_by_role("button", name="Browse").click()
    entry = page.get_by_role("menuitem", name="Data Docs")
    entry.wait_for()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browse_menu.png"))
    with page.context.expect_page() as opened:
        entry.click()  # an external view: a new tab
    docs = opened.value
    docs.wait_for_load_state()
    assert docs.url == f"{settings.airflow_url}/data-docs/index.html", docs.url
    from mlplatform.pipeline.stages import gx_root
    from mlplatform.validation.docs import site_dir

    if (site_dir(gx_root(settings)) / "index.html").exists():  # a validation has run in this stack
        assert "Data Docs" in docs.title() or "Great Expectations" in docs.content()
    else:
        assert "Not Found" in docs.content()


def test_the_gpu_quota_page_needs_a_login_and_shows_the_pools_of_a_run_in_progress(page, settings, stack):
    import httpx

    quota = f"{settings.airflow_url}/gpu-quota/"
    assert httpx.get(f"{quota}api/pools", timeout=10).status_code == 401  # no session, no data
    page.goto(quota)
    page.wait_for_url("**/auth/login**")  # a browser without a session is sent to the login page

    client = AirflowClient(settings.airflow_url, settings.airflow_admin, stack.admin_password())
    client.wait_for_dag("ml_pipeline")
    run_id = client.trigger("ml_pipeline", {"events": 60, "max_steps": 1, "batch_size": 8})
    try:
        _login(page, settings, stack)
        page.get_by_role("button", name="Browse").click()
        entry = page.get_by_role("menuitem", name="GPU quota")
        entry.wait_for()
        with page.context.expect_page() as opened:
            entry.click()
        view = opened.value
        view.wait_for_load_state()
        assert view.url == quota, view.url
        assert view.locator("tr[data-pool='gpu_local']").count() == 1  # the GPU pools are listed first
        assert "NVML" in view.locator("tr[data-pool='gpu_local']").inner_text()  # where its size comes from
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and view.locator(f"#pools li:has-text('{run_id}')").count() == 0:
            time.sleep(3)
            view.reload()
        holder = view.locator(f"#pools li:has-text('{run_id}')").first
        assert holder.is_visible(), "no pool shows a task of the run in progress"
        assert holder.locator(".priority").inner_text()  # each task shows its priority (level or weight)
        pool = holder.locator("xpath=ancestor::tr").get_attribute("data-pool")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        view.screenshot(path=str(ARTIFACTS / "gpu_quota.png"), full_page=True)
        assert pool in {p["name"] for p in client.request("GET", "/pools")["pools"]}
        assert view.get_by_text("GPU-hours by team, last 7 days").is_visible()
    finally:
        client.request("PATCH", f"/dags/ml_pipeline/dagRuns/{run_id}", json={"state": "failed"})
