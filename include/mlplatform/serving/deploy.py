"""Deploy the champion locally (a server process) and smoke-test it. The cluster profile renders a
k8s Deployment for the same server instead (docker/k8s/serving.yaml)."""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx

from mlplatform.config.settings import Settings
from mlplatform.stack import process

SMOKE_REQUEST = {
    "customer_id": "C000001",
    "subject": "Production outage",
    "body": "Our production system is down and customers are affected.",
}


def _pid_file(s: Settings):  # type: ignore[no-untyped-def]
    return s.home / "run" / "model-server.pid"


def stop_server(s: Settings) -> bool:
    return process.stop(_pid_file(s))


def start_server(s: Settings, model_uri: str, timeout: float = 180) -> str:
    """(Re)start the model server on ``model_uri``; returns its URL once /health answers."""
    import os

    stop_server(s)
    process.check_port_free(s.serving_port, "serving", set())
    env = dict(os.environ)
    env.setdefault("MLP_HOME", str(s.home))
    rec = process.spawn(
        [
            sys.executable,
            "-m",
            "mlplatform.serving.server",
            "--model-uri",
            model_uri,
            "--tracking-uri",
            s.mlflow_uri,
            "--host",
            s.host,
            "--port",
            str(s.serving_port),
        ],
        pid_file=_pid_file(s),
        log_file=s.home / "logs" / "model-server.log",
        env=env,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not rec.alive():
            raise RuntimeError(f"model server exited:\n{process.tail(s.home / 'logs' / 'model-server.log', 30)}")
        try:
            if httpx.get(f"{s.serving_url}/health", timeout=2).status_code == 200:
                return s.serving_url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"model server on {s.serving_url} not healthy after {timeout:.0f}s")


def predict(s: Settings, request: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(f"{s.serving_url}/predict", json=request, timeout=30)
    resp.raise_for_status()
    result: dict[str, Any] = resp.json()
    return result


def smoke_test(s: Settings) -> dict[str, Any]:
    """One real request; fails unless the answer is a probability for the asked customer."""
    out = predict(s, SMOKE_REQUEST)
    prob = out.get("escalation_probability")
    if not isinstance(prob, float) or not 0.0 <= prob <= 1.0 or out.get("customer_id") != SMOKE_REQUEST["customer_id"]:
        raise RuntimeError(f"smoke test got an invalid answer: {out}")
    return out
