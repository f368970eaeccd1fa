"""The local stack behind ``mlp up | down | status | logs``: idempotent, and stops only what it started."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlplatform.config.settings import Settings
from mlplatform.gpu.inventory import healthy_count, local_gpus
from mlplatform.stack import process
from mlplatform.stack.services import BIN, Service, ServiceError, airflow_env, all_services, settings_json, wait_healthy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    url: str


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.run_dir = settings.home / "run"
        self.log_dir = settings.home / "logs"
        self.services = all_services(settings)

    def pid_file(self, svc: Service) -> Path:
        return self.run_dir / f"{svc.name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _own_pids(self) -> set[int]:
        pids = set()
        for svc in self.services:
            rec = process.read_pid(self.pid_file(svc))
            if rec and rec.alive():
                pids.add(rec.pid)
        return pids

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in self.services)}")

    def up(self, on_event: Callable[[str, str], None] = lambda name, msg: None, only: list[str] | None = None) -> None:
        """Start every service that is not already running (or only the named ones, e.g. for a benchmark
        that needs Kafka and the registry), then provision Airflow's settings when Airflow is part of it."""
        self.s.home.mkdir(parents=True, exist_ok=True)
        if only is not None:
            unknown = set(only) - {s.name for s in self.services}
            if unknown:
                raise KeyError(f"unknown services {sorted(unknown)}; known: {[s.name for s in self.services]}")
        if only is None:
            services = [svc for svc in self.services if not svc.optional or svc.wanted()]
        else:
            services = [svc for svc in self.services if svc.name in only]
        # Fail fast, before starting anything, when a port is held by a process we did not start.
        own = self._own_pids()
        for svc in services:
            rec = process.read_pid(self.pid_file(svc))
            if rec and rec.alive():
                continue
            for port in svc.ports:
                process.check_port_free(port, svc.name, own)
        for svc in services:
            rec = process.read_pid(self.pid_file(svc))
            if rec and rec.alive():
                if svc.health():
                    on_event(svc.name, "already running")
                    continue
                on_event(svc.name, "running, waiting for health")
                wait_healthy(svc, rec.alive, self.log_file(svc.name))
                continue
            if svc.prepare:
                on_event(svc.name, "preparing")
                svc.prepare()
            on_event(svc.name, "starting")
            rec = process.spawn(
                svc.argv(), pid_file=self.pid_file(svc), log_file=self.log_file(svc.name), env=svc.env()
            )
            wait_healthy(svc, rec.alive, self.log_file(svc.name))
            if svc.after_start:
                svc.after_start()
            on_event(svc.name, "healthy")
        if any(svc.name.startswith("airflow") for svc in services):
            on_event("airflow-settings", "provisioning connections, pools, variables")
            self.provision_airflow()
            on_event("airflow-settings", "done")
            if self.s.k8s or self.s.kubeconfig:
                on_event("gpu-pools", "sizing the GPU pools from the cluster's nodes")
                from mlplatform.gpu.sync import sync_gpu_pools
                from mlplatform.stack.airflow_api import AirflowClient

                client = AirflowClient(self.s.airflow_url, self.s.airflow_admin, self.admin_password() or "")
                changed = sync_gpu_pools(self.s, client).changed
                on_event("gpu-pools", f"resized: {', '.join(changed) or 'none'}")

    def down(self) -> list[str]:
        stopped = []
        for svc in reversed(self.services):
            if process.stop(self.pid_file(svc)):
                stopped.append(svc.name)
        from mlplatform.serving.deploy import stop_server

        if stop_server(self.s):
            stopped.append("model-server")
        return stopped

    def status(self) -> list[ServiceStatus]:
        out = []
        for svc in self.services:
            rec = process.read_pid(self.pid_file(svc))
            running = bool(rec and rec.alive())
            if svc.optional and not running and not svc.wanted():
                continue  # an optional service nobody asked for is not "down"
            out.append(ServiceStatus(svc.name, running, running and svc.health(), rec.pid if rec else None, svc.url))
        return out

    # --------------------------------------------------------------------------- airflow settings

    def render_airflow_settings(self) -> dict[str, Any]:
        """airflow_settings.yaml with placeholders filled and `nvml` pool sizes resolved."""
        raw = (self.s.repo_root / "airflow_settings.yaml").read_text()
        values = settings_json(self.s)
        missing = set(re.findall(r"\$\{(\w+)\}", raw)) - set(values)
        if missing:
            raise ServiceError(f"airflow_settings.yaml uses unknown placeholders: {sorted(missing)}")
        filled = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], raw)
        doc: dict[str, Any] = yaml.safe_load(filled)["airflow"]
        gpus = healthy_count(local_gpus())  # an unhealthy GPU (ECC, remapping, temperature) does not count
        if self.s.kafka_sasl:  # the broker wants a login: every Kafka connection carries it
            auth = {k: v for k, v in self.s.kafka_client().items() if k != "bootstrap.servers"}
            for conn in doc.get("connections", []):
                if conn["conn_type"] == "kafka":
                    conn["conn_extra"] = {**(conn.get("conn_extra") or {}), **auth}
        for pool in doc.get("pools", []):
            if pool.get("pool_slot") == "nvml":
                pool["pool_slot"] = gpus
        password = self.admin_password()
        if password:  # the sync_gpu_pools DAG resizes pools through the REST API, as the admin
            doc.setdefault("connections", []).append(
                {
                    "conn_id": "airflow_api",
                    "conn_type": "http",
                    "conn_host": self.s.host,
                    "conn_port": str(self.s.airflow_port),
                    "conn_schema": "http",
                    "conn_login": self.s.airflow_admin,
                    "conn_password": password,
                }
            )
        from mlplatform.ingest.schemas import load_subjects
        from mlplatform.pipeline.tasks import lane_pool

        for spec in load_subjects(self.s.schema_dir).values():
            doc.setdefault("pools", []).append(
                {
                    "pool_name": lane_pool(spec.topic),
                    "pool_slot": 1,
                    "pool_description": f"ingest lane of {spec.topic}: one writer per topic and group at a time",
                }
            )
        return doc

    def provision_airflow(self) -> None:
        doc = self.render_airflow_settings()
        conns = {
            c["conn_id"]: {
                "conn_type": c["conn_type"],
                "host": c.get("conn_host"),
                "port": int(c["conn_port"]) if c.get("conn_port") else None,
                "login": c.get("conn_login"),
                "password": c.get("conn_password"),
                "schema": c.get("conn_schema"),
                "extra": json.dumps(c.get("conn_extra") or {}),
            }
            for c in doc.get("connections", [])
        }
        pools = {
            p["pool_name"]: {
                "slots": int(p["pool_slot"]),
                "description": p.get("pool_description", ""),
                "include_deferred": p["pool_name"].startswith("gpu_"),  # a deferred GPU task keeps its GPUs
            }
            for p in doc.get("pools", [])
        }
        variables = {v["variable_name"]: v["variable_value"] for v in doc.get("variables", [])}
        env = airflow_env(self.s)
        with tempfile.TemporaryDirectory() as tmp:
            for kind, payload, extra in (
                ("connections", conns, ["--overwrite"]),
                ("pools", pools, []),
                ("variables", variables, []),
            ):
                path = os.path.join(tmp, f"{kind}.json")
                with open(path, "w") as fh:
                    json.dump(payload, fh)
                os.chmod(path, 0o600)
                res = subprocess.run(  # noqa: S603
                    [str(BIN / "airflow"), kind, "import", path, *extra],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                if res.returncode != 0:
                    raise ServiceError(f"airflow {kind} import failed:\n{res.stdout[-1500:]}{res.stderr[-1500:]}")

    def admin_password(self) -> str | None:
        path = self.s.home / "airflow" / "simple_auth_manager_passwords.json.generated"
        if not path.exists():
            return None
        data: dict[str, str] = json.loads(path.read_text())
        return data.get(self.s.airflow_admin)
