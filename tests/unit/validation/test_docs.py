"""Data Docs over HTTP: page addresses and the static app the Airflow API server mounts."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from mlplatform.config.settings import Settings
from mlplatform.validation import docs


def test_a_page_of_the_site_gets_its_address_under_the_api_server(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    s = Settings(airflow_port=18080)
    page = docs.site_dir(tmp_path) / "validations" / "support" / "tickets" / "run 1" / "x.html"
    url = docs.http_url(page.as_uri(), tmp_path, s)
    assert url == "http://127.0.0.1:18080/data-docs/validations/support/tickets/run%201/x.html"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    assert docs.http_url(page.as_uri(), tmp_path, s).startswith("https://airflow.example.com/data-docs/validations/")
    assert docs.http_url((tmp_path / "elsewhere.html").as_uri(), tmp_path, s) == ""  # not a page of the site
    assert docs.http_url("", tmp_path, s) == ""


def test_the_site_is_served_read_only_and_nothing_outside_it(tmp_path):
    site = docs.site_dir(tmp_path)
    (site / "validations").mkdir(parents=True)
    (site / "index.html").write_text("<html>index</html>")
    (site / "validations" / "run.html").write_text("<html>run</html>")
    (tmp_path / "secret.txt").write_text("no")
    host = FastAPI()
    host.mount(docs.PREFIX, docs.app(tmp_path))
    client = TestClient(host)
    assert client.get("/data-docs/").text == "<html>index</html>"
    assert client.get("/data-docs/validations/run.html").text == "<html>run</html>"
    assert client.get("/data-docs/missing.html").status_code == 404
    assert client.get("/data-docs/..%2F..%2F..%2Fsecret.txt").status_code == 404
    assert client.post("/data-docs/index.html").status_code == 405


def test_the_app_answers_before_any_validation_wrote_the_site(tmp_path):
    host = FastAPI()
    host.mount(docs.PREFIX, docs.app(tmp_path / "fresh"))
    assert TestClient(host).get("/data-docs/index.html").status_code == 404
