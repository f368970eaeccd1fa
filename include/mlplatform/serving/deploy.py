"""Deploy the champion locally, without a gap: the model server follows ``models:/<name>@champion`` and swaps
versions in place, so deploying means making sure it runs, then waiting until it serves the champion's
version, or refuses it. A refused version is rolled back (the alias returns to the version still serving,
recorded in the audit trail) and the deploy fails with the server's reason. The cluster profile runs the same
server as a k8s Deployment (docker/k8s/serving.yaml)."""

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


class ModelRefused(RuntimeError):
    """The server would not serve the version (it failed to load, raised, or scored nonsense)."""


def _pid_file(s: Settings):  # type: ignore[no-untyped-def]
    return s.home / "run" / "model-server.pid"


def prediction_log_dir(s: Settings):  # type: ignore[no-untyped-def]
    return s.data_dir / "predictions" / s.model_name


def stop_server(s: Settings) -> bool:
    return process.stop(_pid_file(s))


def health(s: Settings, timeout: float = 5) -> dict[str, Any] | None:
    """The server's /health answer (served or not: 200 and 503 both carry it), or None when it is down."""
    try:
        resp = httpx.get(f"{s.serving_url}/health", timeout=timeout)
    except httpx.HTTPError:
        return None
    return resp.json() if resp.status_code in (200, 503) else None


def start_server(s: Settings, model_uri: str | None = None, timeout: float = 180) -> str:
    """Start the model server on ``model_uri`` (default: the champion alias, followed) unless it runs
    already; returns its URL once it answers /health. A running server is left alone: it swaps versions
    itself."""
    import os

    model_uri = model_uri or f"models:/{s.model_name}@champion"
    log_file = s.home / "logs" / "model-server.log"
    running = process.read_pid(_pid_file(s))
    if running is not None and running.alive():
        # running: maybe still loading its first model (no answer yet): wait for it, never restart it
        deadline = time.monotonic() + timeout
        while running.alive() and time.monotonic() < deadline:
            if health(s, timeout=2) is not None:
                return s.serving_url
            time.sleep(1)
        if running.alive():
            raise TimeoutError(f"the model server (pid {running.pid}) runs but has not answered for {timeout:.0f}s")
    stop_server(s)
    process.check_port_free(s.serving_port, "serving", set())
    env = {**os.environ, **s.as_env()}
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
            "--log-dir",
            str(prediction_log_dir(s)),
        ],
        pid_file=_pid_file(s),
        log_file=log_file,
        env=env,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not rec.alive():
            raise RuntimeError(f"model server exited:\n{process.tail(log_file, 30)}")
        if health(s, timeout=2) is not None:
            return s.serving_url
        time.sleep(1)
    raise TimeoutError(f"model server on {s.serving_url} not answering after {timeout:.0f}s")


def wait_for_version(s: Settings, version: str, timeout: float = 300) -> dict[str, Any]:
    """Wait until the server serves ``version``; ModelRefused when it refuses it."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = health(s)
        if last is not None:
            serving = last.get("serving") or {}
            if str(serving.get("version")) == str(version):
                return last
            refused = (last.get("refused") or {}).get(str(version))
            if refused:
                raise ModelRefused(f"the model server refused version {version}: {refused['reason']}")
        time.sleep(0.5)
    raise TimeoutError(f"the model server did not serve version {version} within {timeout:.0f}s (last: {last})")


def rollout(s: Settings, swap_timeout_s: float = 300, smoke: bool = True) -> dict[str, Any]:
    """Serve the champion: start the server if needed, wait (up to ``swap_timeout_s``) for it to swap to the
    champion's version, smoke test it (unless ``smoke`` is off). A refused version is rolled back in the
    registry and the deploy fails naming the reason."""
    from mlflow import MlflowClient

    from mlplatform.registry import audit

    client = MlflowClient(s.mlflow_uri)
    version = str(client.get_model_version_by_alias(s.model_name, "champion").version)
    url = start_server(s)
    try:
        state = wait_for_version(s, version, timeout=swap_timeout_s)
    except ModelRefused as exc:
        serving = ((health(s) or {}).get("serving") or {}).get("version")
        if serving is not None:
            audit.rollback(
                client,
                s.model_name,
                who="deploy (automatic rollback)",
                why=str(exc),
                to=str(serving),
                expect_from=version,  # not if someone promoted another version meanwhile
            )
            raise ModelRefused(f"{exc}; champion rolled back to version {serving}, which keeps serving") from exc
        raise
    return {
        "url": url,
        "version": version,
        "serving": state["serving"],
        "smoke_test": smoke_test(s) if smoke else {"skipped": True},
    }


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
