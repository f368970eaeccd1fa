"""The REST client's answer to a transient server error, against a real HTTP server that fails on purpose
(Airflow's own 500 "Database error" after a deadlock cannot be provoked on demand)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlplatform.stack.airflow_api import AirflowApiError, AirflowClient


class _Flaky(BaseHTTPRequestHandler):
    calls: Counter[str] = Counter()
    failures = 0  # answer this many API calls with a 500 before answering properly

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _api(self) -> None:
        if self.path == "/auth/token":
            self._answer(201, {"access_token": "t"})
            return
        if self.headers.get("Content-Length"):
            self.rfile.read(int(self.headers["Content-Length"]))
        self.calls[self.command] += 1
        if self.calls[self.command] <= type(self).failures:
            self._answer(500, {"detail": {"reason": "Database error"}})
        elif self.path.startswith("/api/v2/missing"):
            self._answer(404, {"detail": "not found"})
        else:
            self._answer(200, {"state": "failed"})

    do_GET = do_POST = do_PATCH = _api

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Flaky]]]:
    handler = type("Handler", (_Flaky,), {"calls": Counter(), "failures": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_an_idempotent_call_is_sent_again_after_a_transient_500(server):
    url, handler = server
    handler.failures = 2
    client = AirflowClient(url, "admin", "pw")
    assert client.request("PATCH", "/dags/d/dagRuns/r", json={"state": "failed"}) == {"state": "failed"}
    assert handler.calls["PATCH"] == 3


def test_a_server_that_keeps_failing_surfaces_its_error_after_the_last_attempt(server):
    url, handler = server
    handler.failures = 99
    client = AirflowClient(url, "admin", "pw")
    with pytest.raises(AirflowApiError, match="500.*Database error") as err:
        client.request("GET", "/dags/d", attempts=3)
    assert err.value.status == 500
    assert handler.calls["GET"] == 3


def test_a_post_is_sent_once_even_when_it_fails(server):
    url, handler = server
    handler.failures = 1
    client = AirflowClient(url, "admin", "pw")
    with pytest.raises(AirflowApiError, match="500"):
        client.trigger("d", {})
    assert handler.calls["POST"] == 1  # a second POST could create a second run


def test_a_client_error_is_not_retried(server):
    url, handler = server
    client = AirflowClient(url, "admin", "pw")
    with pytest.raises(AirflowApiError, match="404") as err:
        client.request("GET", "/missing")
    assert err.value.status == 404
    assert handler.calls["GET"] == 1
