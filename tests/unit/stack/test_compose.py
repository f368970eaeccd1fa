"""The compose file is the container twin of `mlp up`: the same services, the same versions, the same
databases. Nothing here runs Docker; this checks what a `docker compose up` would trip over first."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mlplatform.config.settings import Settings
from mlplatform.stack.services import APICURIO_VERSION, DATABASES, all_services

DOCKER = Path(__file__).resolve().parents[3] / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_every_stack_service_has_a_container_and_dependencies_resolve(tmp_path):
    compose = _compose()
    services = compose["services"]
    names = {svc.name for svc in all_services(Settings(home=tmp_path))}
    assert names <= set(services), names - set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        assert set(svc.get("depends_on", {})) <= set(services), name
    for volume in (v.split(":")[0] for svc in services.values() for v in svc.get("volumes", [])):
        assert volume.startswith(".") or volume in compose["volumes"], volume


def test_registry_container_runs_the_version_mlp_up_runs_and_has_its_database():
    image = _compose()["services"]["schema-registry"]["image"]
    assert image == f"apicurio/apicurio-registry:{APICURIO_VERSION}"
    created = set(re.findall(r"CREATE DATABASE (\w+);", (DOCKER / "postgres-init.sql").read_text()))
    assert set(DATABASES) - {"airflow"} <= created  # airflow is POSTGRES_DB, created by the image itself


def test_compose_prometheus_scrapes_what_the_process_stack_scrapes(tmp_path):
    from mlplatform.stack.services import prometheus_config

    compose = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    local = prometheus_config(Settings(home=tmp_path))
    assert [j["job_name"] for j in compose["scrape_configs"]] == [j["job_name"] for j in local["scrape_configs"]]
    honored = {j["job_name"] for j in compose["scrape_configs"] if j.get("honor_labels")}
    assert honored == {j["job_name"] for j in local["scrape_configs"] if j.get("honor_labels")} == {"pushgateway"}
    services = _compose()["services"]
    assert services["statsd-exporter"]["image"].endswith(":v0.28.0")  # the version `mlp fetch` builds
    mounted = {v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert {"./grafana/provisioning", "./grafana/dashboards"} <= mounted
