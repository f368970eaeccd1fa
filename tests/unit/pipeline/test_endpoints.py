from __future__ import annotations

import pytest

from mlplatform.pipeline.endpoints import kafka_from_extra, registry_from_connection


def test_kafka_connection_keeps_shared_client_settings_only():
    extra = {
        "bootstrap.servers": "k:9092",
        "group.id": "someone-elses",
        "auto.offset.reset": "latest",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
    }
    assert kafka_from_extra(extra) == {
        "bootstrap.servers": "k:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
    }


def test_the_connections_login_and_password_are_the_sasl_credentials_unless_the_extra_has_them():
    extra = {"bootstrap.servers": "k:9092", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512"}
    conf = kafka_from_extra(extra, "ingest", "s3cret-pass")
    assert (conf["sasl.username"], conf["sasl.password"]) == ("ingest", "s3cret-pass")
    assert kafka_from_extra({**extra, "sasl.username": "from-extra"}, "ingest", None)["sasl.username"] == "from-extra"
    assert "sasl.password" not in kafka_from_extra(extra)


def test_local_endpoints_log_in_only_when_the_broker_wants_it(tmp_path):
    from mlplatform.config.settings import Settings
    from mlplatform.pipeline.endpoints import local

    plain = Settings(home=tmp_path)
    assert local(plain).kafka == {"bootstrap.servers": plain.kafka_bootstrap}
    sasl = local(Settings(home=tmp_path, kafka_sasl=True)).kafka
    assert sasl["security.protocol"] == "SASL_PLAINTEXT"
    assert sasl["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert sasl["sasl.password"] == local(Settings(home=tmp_path, kafka_sasl=True)).kafka["sasl.password"]  # stable
    assert len(sasl["sasl.password"]) >= 20


def test_kafka_connection_without_bootstrap_servers_is_named():
    with pytest.raises(ValueError, match="bootstrap.servers"):
        kafka_from_extra({"group.id": "x"})


@pytest.mark.parametrize(
    ("host", "port", "schema", "extra", "url"),
    [
        ("127.0.0.1", 8081, "http", {"path": "/apis/ccompat/v7"}, "http://127.0.0.1:8081/apis/ccompat/v7"),
        ("sr.example.com", None, "https", {}, "https://sr.example.com"),
        ("https://sr.example.com/", None, None, {}, "https://sr.example.com"),
    ],
)
def test_registry_connection_to_url(host, port, schema, extra, url):
    assert registry_from_connection(host, port, schema, None, None, extra).url == url


def test_registry_credentials_become_basic_auth():
    cfg = registry_from_connection("sr", 443, "https", "key", "secret", {"timeout": 3})
    assert cfg.client_conf()["basic.auth.user.info"] == "key:secret"
    assert cfg.client_conf()["timeout"] == 3.0
