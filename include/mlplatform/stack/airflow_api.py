"""A small client of the Airflow 3 REST API (/api/v2), authenticated like a person: a JWT from /auth/token."""

from __future__ import annotations

import time
from typing import Any

import httpx
from tenacity import (
    Retrying,
    retry,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

TERMINAL = {"success", "failed"}
# methods the API applies idempotently: sent again after a transient server error (Airflow answers a
# database deadlock or a dropped connection with a 500 "Database error", and rolls that request back)
IDEMPOTENT = {"GET", "HEAD", "PUT", "PATCH", "DELETE"}


class AirflowApiError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, AirflowApiError) and exc.status is not None and exc.status >= 500


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base = base_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)
        self.username, self.password = username, password
        self._token: str | None = None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            resp = self.http.post(
                f"{self.base}/auth/token", json={"username": self.username, "password": self.password}
            )
            if resp.status_code not in (200, 201):
                raise AirflowApiError(f"login as {self.username} failed: {resp.status_code} {resp.text[:200]}")
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, attempts: int = 4, **kw: Any) -> Any:
        """One API call; an idempotent one is sent again (``attempts`` in all) while the server answers 5xx.
        A POST is sent once: sending it again could create a second run."""
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(attempts if method.upper() in IDEMPOTENT else 1),
            wait=wait_exponential(multiplier=0.5, max=5),
            reraise=True,
        )
        return retrying(self._request, method, path, **kw)

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, f"{self.base}/api/v2{path}", headers=self._headers(), **kw)
        if resp.status_code >= 400:
            raise AirflowApiError(f"{method} {path}: {resp.status_code} {resp.text[:500]}", resp.status_code)
        return resp.json() if resp.content else None

    def paged(self, path: str, key: str, params: dict[str, Any] | None = None, page: int = 100) -> list[Any]:
        """Every item of a list endpoint, page by page (the API caps a page at ``[api] maximum_page_limit``,
        100 by default, whatever ``limit`` asks for)."""
        items: list[Any] = []
        while True:
            data = self.request("GET", path, params={**(params or {}), "limit": page, "offset": len(items)})
            items.extend(data[key])
            if not data[key] or len(items) >= int(data.get("total_entries", len(items))):
                return items

    @retry(retry=retry_if_exception_type(AirflowApiError), stop=stop_after_delay(240), wait=wait_fixed(3), reraise=True)
    def wait_for_dag(self, dag_id: str) -> dict[str, Any]:
        """Wait until the dag-processor has parsed ``dag_id``."""
        dag: dict[str, Any] = self.request("GET", f"/dags/{dag_id}")
        return dag

    def import_errors(self) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = self.request("GET", "/importErrors")["import_errors"]
        return errors

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf, **({"dag_run_id": run_id} if run_id else {})}
        run = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        data = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in data["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        data = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        return data["value"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800, on_poll: Any = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if on_poll:
                on_poll(state)
            if state in TERMINAL:
                return state
            time.sleep(3)
        raise TimeoutError(
            f"{dag_id} run {run_id} did not finish within {timeout:.0f}s; its tasks: "
            f"{self.task_states(dag_id, run_id)}; unfinished tasks of the deployment: {self.unfinished()}"
        )

    def unfinished(self, limit: int = 50) -> list[str]:
        """``dag_id/task_id[map_index] state (run_id)`` of every task instance not done yet, across DAGs:
        what holds the executor's slots and pools when a run does not move."""
        states = ["running", "queued", "scheduled", "deferred", "up_for_retry", "up_for_reschedule", "awaiting_input"]
        data = self.request("GET", "/dags/~/dagRuns/~/taskInstances", params={"state": states, "limit": limit})
        return [
            f"{ti['dag_id']}/{ti['task_id']}[{ti['map_index']}] {ti['state']} ({ti['dag_run_id']})"
            for ti in data["task_instances"]
        ]
