"""A throwaway Schema Registry (Apicurio with in-memory storage, on a free loopback port) for checking the
data contracts without the stack: `mlp schemas check` and the CI step use it."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlplatform.config.settings import Settings
from mlplatform.ingest.schemas import CCOMPAT_PATH, RegistryConfig
from mlplatform.stack.services import ServiceError, registry_argv, registry_env, registry_ready


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_registry(s: Settings, timeout_s: float = 120.0) -> Iterator[RegistryConfig]:
    """Start an in-memory Apicurio Registry, yield its Confluent-compatible endpoint, stop it."""
    port = _free_port(s.host)
    base = f"http://{s.host}:{port}"
    with tempfile.TemporaryDirectory(prefix="mlp-registry-") as tmp:
        log_path = Path(tmp) / "registry.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own java command line
                registry_argv(s), env=registry_env(s, storage="memory", port=port), stdout=log, stderr=log, cwd=tmp
            )
        try:
            deadline = time.monotonic() + timeout_s
            while not registry_ready(base):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ServiceError(f"the scratch schema registry did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield RegistryConfig(base + CCOMPAT_PATH)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
