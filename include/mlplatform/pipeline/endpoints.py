"""Where Kafka and the Schema Registry are, and how to authenticate.

Inside an Airflow task they come from Airflow Connections (``kafka_default``, ``schema_registry_default``),
so a cluster deployment changes endpoints and credentials in one place and no secret sits in code or
settings. Outside Airflow (``mlp ingest``, ``mlp produce``, tests) the local stack's settings are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlplatform.config.settings import Settings, get_settings
from mlplatform.ingest.schemas import RegistryConfig

KAFKA_CONN = "kafka_default"
REGISTRY_CONN = "schema_registry_default"
# librdkafka client settings a connection may carry that every client shares (consumer-group and
# producer-only settings are set by the code that knows the role).
_SHARED_PREFIXES = ("bootstrap.servers", "security.protocol", "sasl.", "ssl.", "client.id", "socket.", "broker.")


@dataclass(frozen=True)
class Endpoints:
    kafka: dict[str, Any]
    registry: RegistryConfig


def local(s: Settings | None = None) -> Endpoints:
    s = s or get_settings()
    return Endpoints(s.kafka_client(), RegistryConfig(s.schema_registry_url))


def kafka_from_extra(extra: dict[str, Any], login: str | None = None, password: str | None = None) -> dict[str, Any]:
    """The shared client settings of a Kafka connection's extra (its group.id and the like are dropped). The
    connection's login and password, when set, are the SASL username and password (the UI masks them there)."""
    conf = {k: v for k, v in extra.items() if k.startswith(_SHARED_PREFIXES)}
    if "bootstrap.servers" not in conf:
        raise ValueError(f"the {KAFKA_CONN} connection has no bootstrap.servers in its extra")
    if login:
        conf.setdefault("sasl.username", login)
    if password:
        conf.setdefault("sasl.password", password)
    return conf


def registry_from_connection(
    host: str, port: int | None, schema: str | None, login: str | None, password: str | None, extra: dict[str, Any]
) -> RegistryConfig:
    """A RegistryConfig from an HTTP connection: host (or a whole URL in host), port, schema http|https,
    login/password for basic auth, and extra ``path``: the API's path on that server (Apicurio serves the
    Confluent API at ``/apis/ccompat/v7``; a Confluent registry at its root, so no path)."""
    base = host.rstrip("/") if "://" in host else f"{schema or 'http'}://{host}" + (f":{port}" if port else "")
    path = str(extra.get("path", ""))
    auth = f"{login}:{password}" if login else None
    return RegistryConfig(base + path, basic_auth=auth, timeout_s=float(extra.get("timeout", 10)))


def from_airflow(kafka_conn: str = KAFKA_CONN, registry_conn: str = REGISTRY_CONN) -> Endpoints:
    """Endpoints from the Airflow connections (call inside a task, never at DAG parse time)."""
    from airflow.sdk import BaseHook

    k = BaseHook.get_connection(kafka_conn)
    r = BaseHook.get_connection(registry_conn)
    return Endpoints(
        kafka_from_extra(k.extra_dejson, k.login, k.password),
        registry_from_connection(r.host or "", r.port, r.schema, r.login, r.password, r.extra_dejson),
    )
