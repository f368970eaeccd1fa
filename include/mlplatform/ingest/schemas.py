"""The data contracts (``include/schemas``) and the Schema Registry that holds them.

``subjects.yaml`` lists each subject's schema versions, oldest first; the last one is the project's
current schema, used as the reader schema by ingestion. Registration goes through confluent-kafka's
``SchemaRegistryClient`` against any Confluent-compatible registry: the local stack's Apicurio Registry
(``/apis/ccompat/v7``) or, on the cluster profile, the registry named by the ``schema_registry_default``
connection. Every subject gets its compatibility mode (BACKWARD) before its versions are registered, so an
incompatible change is refused by the registry itself, naming the subject and the difference.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SUBJECTS_FILE = "subjects.yaml"
CCOMPAT_PATH = "/apis/ccompat/v7"


class SchemaContractError(RuntimeError):
    """A contract file is malformed, or the registry refused a version (incompatible change)."""


@dataclass(frozen=True)
class SubjectSpec:
    """One subject's declared history: compatibility mode and the schema files, oldest first."""

    name: str
    compatibility: str
    versions: tuple[Path, ...]

    @property
    def topic(self) -> str:
        return self.name.removesuffix("-value")

    @property
    def current(self) -> Path:
        return self.versions[-1]

    def schema_str(self, version: int | None = None) -> str:
        """The schema text of 1-based ``version`` (default: the current one)."""
        path = self.current if version is None else self.versions[version - 1]
        return path.read_text().strip()  # as clients send it (AvroSerializer strips the text too)


@dataclass(frozen=True)
class RegistryConfig:
    """Where a Confluent-compatible registry is, and how to authenticate (from a connection or settings)."""

    url: str
    basic_auth: str | None = None  # "user:password"
    timeout_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)

    def client_conf(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s, "max.retries": 2, **self.extra}
        if self.basic_auth:
            conf["basic.auth.user.info"] = self.basic_auth
        return conf


def _default_dir() -> Path:
    from mlplatform.config.settings import get_settings

    return get_settings().schema_dir


def load_subjects(schema_dir: Path = SCHEMA_DIR) -> dict[str, SubjectSpec]:
    """Parse ``subjects.yaml``; every listed file must exist and be valid Avro."""
    import fastavro

    path = schema_dir / SUBJECTS_FILE
    doc = yaml.safe_load(path.read_text()) or {}
    out: dict[str, SubjectSpec] = {}
    for name, entry in doc.items():
        versions = tuple(schema_dir / v for v in entry.get("versions", []))
        if not versions:
            raise SchemaContractError(f"{path}: subject {name!r} lists no schema versions")
        for v in versions:
            if not v.exists():
                raise SchemaContractError(f"{path}: subject {name!r} names {v.name}, which does not exist")
            try:
                fastavro.parse_schema(json.loads(v.read_text()))
            except Exception as exc:  # noqa: BLE001 - json and fastavro raise many kinds of parse errors
                raise SchemaContractError(f"{v}: not a valid Avro schema: {exc}") from exc
        out[name] = SubjectSpec(name, str(entry.get("compatibility", "BACKWARD")).upper(), versions)
    return out


@lru_cache(maxsize=8)
def _subjects_cached(schema_dir: str) -> dict[str, SubjectSpec]:
    return load_subjects(Path(schema_dir))


def subject_for_topic(topic: str, schema_dir: Path | None = None) -> SubjectSpec:
    """The value subject of ``topic`` (TopicNameStrategy), from ``schema_dir`` (default: the setting
    ``MLP_SCHEMA_DIR``, which defaults to include/schemas)."""
    if schema_dir is None:
        from mlplatform.config.settings import get_settings

        schema_dir = get_settings().schema_dir
    subjects = _subjects_cached(str(schema_dir))
    try:
        return subjects[f"{topic}-value"]
    except KeyError:
        raise KeyError(
            f"no data contract for topic {topic!r}: add subject '{topic}-value' to {schema_dir / SUBJECTS_FILE}"
        ) from None


def client(cfg: RegistryConfig) -> Any:
    """A confluent-kafka SchemaRegistryClient (it caches schemas by id and by subject)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient(cfg.client_conf())


def field_path(schema: Any, pointer: str) -> str | None:
    """The dotted field name a registry's JSON pointer into ``schema`` names: ``/fields/4/type`` of the
    ticket contract is ``priority``. None when the pointer does not lead through named fields."""
    node, names = schema, []
    for token in pointer.strip("/").split("/"):
        if isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
            if isinstance(node, dict) and "name" in node and "type" in node:
                names.append(str(node["name"]))
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            break
    return ".".join(names) or None


def _refusal(exc: Exception, schema_str: str) -> str:
    """The registry's reason, with each JSON pointer it gives (``at /fields/4/type``) named as a field."""
    import re

    text = getattr(exc, "error_message", None) or str(exc)
    schema = json.loads(schema_str)

    def name(m: re.Match[str]) -> str:
        field = field_path(schema, m.group(1))
        return f"{m.group(0)} (field {field!r})" if field else m.group(0)

    return re.sub(r"at (/[\w/]+)", name, text)


def register_subject(sr: Any, spec: SubjectSpec) -> list[int]:
    """Set the subject's compatibility mode, then register each version in order (idempotent: a version
    already registered returns its id). Raises SchemaContractError when the registry refuses a version."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    sr.set_compatibility(subject_name=spec.name, level=spec.compatibility)
    ids = []
    for number, path in enumerate(spec.versions, start=1):
        try:
            ids.append(int(sr.register_schema(spec.name, Schema(spec.schema_str(number), "AVRO"))))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise SchemaContractError(
                    f"the registry refused {path.name} (version {number} of subject {spec.name}) under "
                    f"{spec.compatibility} compatibility: {_refusal(exc, spec.schema_str(number))}"
                ) from None
            raise
    return ids


def register_all(cfg: RegistryConfig, schema_dir: Path | None = None) -> dict[str, list[int]]:
    """Register every subject's history; returns subject -> schema ids (oldest first)."""
    sr = client(cfg)
    specs = load_subjects(schema_dir or _default_dir())
    out = {name: register_subject(sr, spec) for name, spec in specs.items()}
    log.info("registered data contracts at %s: %s", cfg.url, out)
    return out


def check_against(cfg: RegistryConfig, schema_dir: Path | None = None) -> list[str]:
    """Test each subject's versions that the registry does not hold yet against what it does hold, without
    registering anything. Returns the problems found (empty: deploying these files is safe)."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    sr = client(cfg)
    problems = []
    for spec in load_subjects(schema_dir or _default_dir()).values():
        for number, path in enumerate(spec.versions, start=1):
            schema = Schema(spec.schema_str(number), "AVRO")
            try:
                sr.lookup_schema(spec.name, schema)
                continue  # already registered
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise
            try:
                ok = sr.test_compatibility(spec.name, schema)
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:  # 404: a new subject, anything is compatible
                    raise
                ok = True
            if not ok:
                problems.append(
                    f"{path.name} (version {number} of {spec.name}) is not {spec.compatibility} compatible "
                    "with the versions the registry holds"
                )
    return problems
