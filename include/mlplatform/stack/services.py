"""The real services of the local stack, each as a process: Kafka (KRaft), PostgreSQL, Redis, the MLflow
tracking server and the four Airflow 3 components."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from mlplatform.config.settings import Settings, ensure_secrets

BIN = Path(sys.executable).parent
DATABASES = ("airflow", "mlflow", "feast", "registry")
APICURIO_VERSION = "3.0.9"


class ServiceError(RuntimeError):
    """A service could not be prepared or did not become healthy."""


@dataclass
class Service:
    name: str
    ports: list[int]
    argv: Callable[[], list[str]]
    health: Callable[[], bool]
    url: str = ""
    prepare: Callable[[], None] | None = None
    after_start: Callable[[], None] | None = None
    env: Callable[[], dict[str, str]] = field(default=lambda: dict(os.environ))
    start_timeout: float = 90.0
    optional: bool = False  # started by a plain `mlp up` only when ``wanted()`` (MLP_SPARK_CLUSTER, MLP_S3)
    wanted: Callable[[], bool] = field(default=lambda: True)


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600, cwd: Path | None = None) -> str:
    res = subprocess.run(  # noqa: S603
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False, cwd=cwd
    )
    if res.returncode != 0:
        raise ServiceError(f"{' '.join(argv[:4])} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return res.stdout


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; run its binaries as the Debian ``postgres`` user then."""
    if os.geteuid() == 0:
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "runuser"
        return [runuser, "-u", "postgres", "--", *argv]
    return argv


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if found:
        return found[-1]
    path = shutil.which(tool)
    if not path:
        raise ServiceError(f"PostgreSQL's {tool} was not found: install the Debian package `postgresql` (make setup)")
    return path


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def spark_env() -> dict[str, str]:
    """SPARK_HOME of the pip-installed PySpark and this interpreter for its workers (spark-submit otherwise
    looks for pyspark with whatever `python3` is first on PATH)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    home = list(spec.submodule_search_locations or [])[0] if spec else ""
    return {"SPARK_HOME": home, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def airflow_env(s: Settings) -> dict[str, str]:
    """Environment shared by every Airflow component (and so by every task they run)."""
    sec = ensure_secrets(s.home)
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(s.home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(s.repo_root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(s.repo_root / "plugins"),
            # LocalExecutor that keeps a resumed task it has not heard back from (see pipeline/executor.py)
            "AIRFLOW__CORE__EXECUTOR": "mlplatform.pipeline.executor.LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": sec["fernet_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.airflow_admin}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.postgres_dsn("airflow"),
            "AIRFLOW__API__HOST": s.host,
            "AIRFLOW__API__PORT": str(s.airflow_port),
            "AIRFLOW__API__BASE_URL": s.airflow_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Airflow's own metrics (scheduler, pools, task durations) over StatsD to the statsd exporter;
            # InfluxDB-style tags, which the exporter turns into labels (pool_name, dag_id, ...)
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": s.host,
            "AIRFLOW__METRICS__STATSD_PORT": str(s.statsd_port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
            "MLP_HOME": str(s.home),
            "MLP_DIST_DIR": str(s.dist_dir),
            "MLP_PROFILE": s.profile,
            "MLP_POSTGRES_PASSWORD": sec["postgres_password"],
            "PYTHONUNBUFFERED": "1",
            # config/airflow_local_settings.py: the GPU quota's cluster policies
            "PYTHONPATH": os.pathsep.join(p for p in (str(s.repo_root / "config"), env.get("PYTHONPATH", "")) if p),
        }
    )
    env.update(spark_env())
    for key, value in _mlp_env(s).items():
        env.setdefault(key, value)
    return env


def airflow_cli_env_file(s: Settings) -> Path:
    """The file `mlp up` writes for the plain `airflow` CLI: ``source`` it, then every `airflow` command (and a
    DAG parsed with ``--local``) talks to this stack's database with this stack's settings."""
    return s.home / "airflow.env"


def write_airflow_cli_config(s: Settings) -> tuple[Path, Path]:
    """Write the stack's Airflow settings where the plain `airflow` CLI finds them: ``$AIRFLOW_HOME/airflow.cfg``
    (so ``export AIRFLOW_HOME=<state dir>/airflow`` alone is enough for `airflow dags list`, `airflow dags
    trigger ... --conf`, `airflow pools list`) and the env file (``source`` it to get the venv's `airflow` on
    PATH and the ``MLP_*`` settings too). Both carry secrets (the database password, the Fernet key) and are
    written owner-only, atomically, on every start, so they never go stale after a port or password change."""
    import configparser
    import shlex

    env = airflow_env(s)
    cfg = configparser.ConfigParser(interpolation=None)
    for key, value in sorted(env.items()):
        if not key.startswith("AIRFLOW__"):
            continue
        _, section, option = key.split("__", 2)
        if not cfg.has_section(section.lower()):
            cfg.add_section(section.lower())
        # Airflow reads airflow.cfg with %-interpolation: a literal % (a URL-encoded password) is written %%
        cfg.set(section.lower(), option.lower(), value.replace("%", "%%"))
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    cfg_path = home / "airflow.cfg"
    with _atomic_private(cfg_path) as fh:
        fh.write("# Written by `mlp up` on every start from the stack's settings; edits are overwritten.\n")
        cfg.write(fh)
    keep = ("AIRFLOW_HOME", "SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONUNBUFFERED")
    exported = {k: v for k, v in env.items() if k in keep or k.startswith("MLP_")}
    env_path = airflow_cli_env_file(s)
    with _atomic_private(env_path) as fh:
        fh.write("# source this file: the plain `airflow` CLI then talks to the stack `mlp up` started\n")
        fh.write(f'export PATH={shlex.quote(str(BIN))}:"$PATH"\n')
        for key, value in sorted(exported.items()):
            fh.write(f"export {key}={shlex.quote(value)}\n")
    return cfg_path, env_path


@contextlib.contextmanager
def _atomic_private(path: Path) -> Iterator[TextIO]:
    """Write ``path`` (mode 0600) through a temporary file renamed over it: readers see the old or the new."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _mlp_env(s: Settings) -> dict[str, str]:
    return {
        "MLP_HOST": s.host,
        "MLP_KAFKA_PORT": str(s.kafka_port),
        "MLP_SCHEMA_REGISTRY_PORT": str(s.schema_registry_port),
        "MLP_POSTGRES_PORT": str(s.postgres_port),
        "MLP_POSTGRES_USER": s.postgres_user,
        "MLP_REDIS_PORT": str(s.redis_port),
        "MLP_MLFLOW_PORT": str(s.mlflow_port),
        "MLP_AIRFLOW_PORT": str(s.airflow_port),
        "MLP_SERVING_PORT": str(s.serving_port),
        "MLP_PUSHGATEWAY_PORT": str(s.pushgateway_port),
        "MLP_PROMETHEUS_PORT": str(s.prometheus_port),
        "MLP_SPARK_MASTER": s.spark_submit_master,
        "MLP_CONSUMER_GROUP": s.consumer_group,
        "MLP_WATCH_GROUP": s.watch_group,
        # the kubernetes_default connection: the configured cluster, or the local control plane's
        "MLP_KUBECONFIG": s.kubeconfig or str(s.home / "k8s" / "kubeconfig"),
    }


def airflow_health(s: Settings) -> dict[str, str]:
    """Component statuses from the api-server's health endpoint ({} when it is down)."""
    try:
        resp = httpx.get(f"{s.airflow_url}/api/v2/monitor/health", timeout=3)
        data = resp.json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {k: (v or {}).get("status", "unknown") for k, v in data.items() if isinstance(v, dict)}


# --------------------------------------------------------------------------------------- postgres


def _postgres(s: Settings) -> Service:
    data = s.home / "postgres" / "data"

    def prepare() -> None:
        sec = ensure_secrets(s.home)
        if (data / "PG_VERSION").exists():
            return
        root = s.home / "postgres"
        root.mkdir(parents=True, exist_ok=True)
        pwfile = root / "pwfile"
        pwfile.write_text(sec["postgres_password"] + "\n")
        if os.geteuid() == 0:
            s.home.chmod(0o755)
            shutil.chown(root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        try:
            _run(
                _as_postgres_user(
                    [
                        _pg_bin("initdb"),
                        "-D",
                        str(data),
                        "-U",
                        s.postgres_user,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                )
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def health() -> bool:
        res = subprocess.run(  # noqa: S603
            [_pg_bin("pg_isready"), "-h", s.host, "-p", str(s.postgres_port), "-t", "2"],
            capture_output=True,
            check=False,
        )
        return res.returncode == 0

    def after_start() -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=s.host, port=s.postgres_port, user=s.postgres_user, password=s.pg_password(), dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()

    return Service(
        name="postgres",
        ports=[s.postgres_port],
        argv=lambda: _as_postgres_user(
            [
                _pg_bin("postgres"),
                "-D",
                str(data),
                "-p",
                str(s.postgres_port),
                "-h",
                s.host,
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
            ]
        ),
        health=health,
        url=f"postgresql://{s.host}:{s.postgres_port}",
        prepare=prepare,
        after_start=after_start,
    )


# ------------------------------------------------------------------------------------------ redis


def _redis(s: Settings) -> Service:
    def health() -> bool:
        import redis

        try:
            return bool(redis.Redis(host=s.host, port=s.redis_port, socket_timeout=2).ping())
        except redis.RedisError:
            return False

    def argv() -> list[str]:
        exe = shutil.which("redis-server")
        if not exe:
            raise ServiceError("redis-server was not found: install the Debian package `redis-server` (make setup)")
        (s.home / "redis").mkdir(parents=True, exist_ok=True)
        return [
            exe,
            "--port",
            str(s.redis_port),
            "--bind",
            s.host,
            "--dir",
            str(s.home / "redis"),
            # durable: the online store survives `mlp down && mlp up` (and a kill -9, to the last second)
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--appenddirname",
            "aof",
            "--protected-mode",
            "yes",
        ]

    return Service("redis", [s.redis_port], argv, health, url=f"redis://{s.host}:{s.redis_port}")


# ------------------------------------------------------------------------------------------ kafka


def kafka_libs(s: Settings) -> Path:
    """The broker's jars, fetched once from Maven Central by docker/kafka/pom.xml (keyed by the pom's hash)."""
    pom = s.repo_root / "docker" / "kafka" / "pom.xml"
    return s.dist_dir / f"kafka-{_digest(pom)}" / "libs"


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def fetch_kafka(s: Settings) -> Path:
    libs = kafka_libs(s)
    if libs.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServiceError("Maven (mvn) is needed to fetch the Kafka broker jars from Maven Central (make setup)")
    tmp = libs.with_name("libs.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pom = s.repo_root / "docker" / "kafka" / "pom.xml"
    _run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
    )
    tmp.replace(libs)
    return libs


def _kafka(s: Settings) -> Service:
    root = s.home / "kafka"
    props = root / "server.properties"

    def prepare() -> None:
        fetch_kafka(s)
        root.mkdir(parents=True, exist_ok=True)
        client, sasl, scram = "PLAINTEXT", [], []
        if s.kafka_sasl:  # SCRAM-SHA-512 on the client listener; the broker logs in to itself with the same user
            password = ensure_secrets(s.home)["kafka_password"]
            client, scram = (
                "SASL_PLAINTEXT",
                ["--add-scram", f"SCRAM-SHA-512=[name={s.kafka_user},password={password}]"],
            )
            sasl = [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{s.kafka_user}" password="{password}";',
            ]
        props.touch(mode=0o600)
        props.chmod(0o600)  # it holds the broker's SCRAM password
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{s.host}:{s.kafka_controller_port}",
                    f"listeners={client}://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
                    f"advertised.listeners={client}://{s.host}:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map={client}:{client},CONTROLLER:PLAINTEXT",
                    f"inter.broker.listener.name={client}",
                    *sasl,
                    f"log.dirs={root / 'data'}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                ]
            )
            + "\n"
        )
        log4j = root / "log4j2.properties"
        log4j.write_text(
            "rootLogger.level=INFO\nrootLogger.appenderRef.stdout.ref=STDOUT\nappender.stdout.type=Console\n"
            "appender.stdout.name=STDOUT\nappender.stdout.layout.type=PatternLayout\n"
            "appender.stdout.layout.pattern=[%d] %p %m (%c)%n\n"
        )
        marker = root / "data" / ".scram-users"
        if s.kafka_sasl and (root / "data" / "meta.properties").exists() and not marker.exists():
            raise ServiceError(
                f"the broker's data in {root / 'data'} was formatted without SCRAM users, so no client could log "
                "in: `mlp down`, remove that directory (its topics go with it), and `mlp up` again"
            )
        if not (root / "data" / "meta.properties").exists():
            cp = f"{kafka_libs(s)}/*"
            cluster_id = _run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"]).strip().splitlines()[-1]
            _run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), *scram])
            if scram:
                marker.write_text(s.kafka_user + "\n")

    def health() -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({**s.kafka_client(), "socket.timeout.ms": 2000, "log_level": 0}).list_topics(timeout=2)
            return True
        except Exception:  # noqa: BLE001 - any client error means "not healthy yet"
            return False

    def create_topics() -> None:
        """The contract topics and their DLQs exist from the start: the AssetWatcher subscribes to them
        before anything is produced (a consumer never creates a topic)."""
        from mlplatform.ingest.kafka import DLQ_SUFFIX, ensure_topics
        from mlplatform.ingest.schemas import load_subjects

        topics = {spec.topic: 3 for spec in load_subjects(s.schema_dir).values()}
        ensure_topics(s.kafka_client(), topics)
        ensure_topics(s.kafka_client(), {t + DLQ_SUFFIX: n for t, n in topics.items()})

    return Service(
        name="kafka",
        ports=[s.kafka_port, s.kafka_controller_port],
        argv=lambda: [
            "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
            "-cp",
            f"{kafka_libs(s)}/*",
            "kafka.Kafka",
            str(props),
        ],
        health=health,
        url=s.kafka_bootstrap,
        prepare=prepare,
        after_start=create_topics,
    )


# ------------------------------------------------------------------------------- schema registry


def apicurio_home(s: Settings) -> Path:
    return s.dist_dir / f"apicurio-registry-{APICURIO_VERSION}"


def fetch_apicurio(s: Settings) -> Path:
    """The Apicurio Registry distribution from Maven Central (docker/apicurio/pom.xml), unpacked once."""
    import tarfile

    home = apicurio_home(s)
    runner = home / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
    if runner.exists():
        return runner
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServiceError("Maven (mvn) is needed to fetch Apicurio Registry from Maven Central (make setup)")
    tmp = home.with_name(home.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pom = s.repo_root / "docker" / "apicurio" / "pom.xml"
    _run([mvn, "-q", "-B", "-f", str(pom), "dependency:copy", f"-DoutputDirectory={tmp}"])
    archive = tmp / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    archive.unlink()
    shutil.rmtree(home, ignore_errors=True)
    tmp.replace(home)
    return runner


def registry_env(s: Settings, storage: str = "postgresql", port: int | None = None) -> dict[str, str]:
    """Apicurio's settings: PostgreSQL storage in the stack's server (schemas survive restarts), or an
    in-memory H2 database for a throwaway registry (`mlp schemas check`)."""
    env = dict(os.environ)
    env.update(
        {
            "QUARKUS_HTTP_HOST": s.host,
            "QUARKUS_HTTP_PORT": str(port or s.schema_registry_port),
            "QUARKUS_HTTP_ACCESS_LOG_ENABLED": "false",
            "APICURIO_STORAGE_KIND": "sql",
            "APICURIO_DATASOURCE_JDBC_INITIAL_SIZE": "2",
            "APICURIO_DATASOURCE_JDBC_MIN_SIZE": "2",
            "APICURIO_DATASOURCE_JDBC_MAX_SIZE": "10",
            # a subject with no compatibility rule of its own gets BACKWARD (subjects.yaml sets it per subject)
            "APICURIO_RULES_DEFAULT_GLOBAL_COMPATIBILITY": "BACKWARD",
            # schema lookups (what a serializer does to find its id) compare canonical forms, so a client
            # that re-formats the schema text (confluent-kafka strips it) still finds the registered id
            "APICURIO_CCOMPAT_USE_CANONICAL_HASH": "true",
        }
    )
    if storage == "postgresql":
        env.update(
            {
                "APICURIO_STORAGE_SQL_KIND": "postgresql",
                "APICURIO_DATASOURCE_URL": f"jdbc:postgresql://{s.host}:{s.postgres_port}/registry",
                "APICURIO_DATASOURCE_USERNAME": s.postgres_user,
                "APICURIO_DATASOURCE_PASSWORD": ensure_secrets(s.home)["postgres_password"],
            }
        )
    else:
        env["APICURIO_STORAGE_SQL_KIND"] = "h2"
    return env


def registry_argv(s: Settings) -> list[str]:
    return ["java", "-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-jar", str(fetch_apicurio(s))]


def registry_ready(base_url: str) -> bool:
    return _http_ok(f"{base_url}/health/ready")


def _registry(s: Settings) -> Service:
    base = f"http://{s.host}:{s.schema_registry_port}"

    def prepare() -> None:
        fetch_apicurio(s)

    def register() -> None:
        from mlplatform.ingest import schemas

        try:
            schemas.register_all(schemas.RegistryConfig(s.schema_registry_url), s.schema_dir)
        except schemas.SchemaContractError as exc:
            raise ServiceError(f"a data contract in include/schemas was refused: {exc}") from exc

    return Service(
        name="schema-registry",
        ports=[s.schema_registry_port],
        argv=lambda: registry_argv(s),
        health=lambda: registry_ready(base),
        url=s.schema_registry_url,
        prepare=prepare,
        after_start=register,
        env=lambda: registry_env(s),
        start_timeout=120,
    )


# ----------------------------------------------------------------------------------------- mlflow


def _mlflow(s: Settings) -> Service:
    artifacts = s.home / "mlflow" / "artifacts"

    def argv() -> list[str]:
        artifacts.mkdir(parents=True, exist_ok=True)
        default = f"s3://{s.s3_bucket}/mlflow" if s.s3 else artifacts.as_uri()
        destination = os.environ.get("MLP_ARTIFACTS_URI", default)
        return [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            s.postgres_dsn("mlflow"),
            "--artifacts-destination",
            destination,
            "--serve-artifacts",
            "--host",
            s.host,
            "--port",
            str(s.mlflow_port),
            "--workers",
            "1",
        ]

    return Service(
        name="mlflow",
        ports=[s.mlflow_port],
        argv=argv,
        env=lambda: {**os.environ, **(s3_env(s) if s.s3 else {})},
        health=lambda: _http_ok(f"{s.mlflow_uri}/health"),
        url=s.mlflow_uri,
        start_timeout=180,
    )


# --------------------------------------------------------------------------------------------- s3


def s3_env(s: Settings) -> dict[str, str]:
    """What an S3 client (boto3, s3fs, MLflow) needs to use the stack's S3 API. moto accepts any key; these
    name the stand-in (the bucket's name), they are not secrets. On the cluster profile the real endpoint and
    credentials come from the environment (IRSA, an Airflow connection)."""
    stand_in = f"{s.s3_bucket}-local"
    return {
        "AWS_ENDPOINT_URL": s.s3_endpoint_url,
        "MLFLOW_S3_ENDPOINT_URL": s.s3_endpoint_url,
        "AWS_ACCESS_KEY_ID": stand_in,
        "AWS_SECRET_ACCESS_KEY": stand_in,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _s3(s: Settings) -> Service:
    """A local S3 API: moto's server mode (PyPI), the stand-in for the cluster's object store. Optional
    (``MLP_S3=1``); its bucket is created at start. moto keeps objects in memory: they last as long as the
    process (the stack's own state stays on disk)."""

    def create_bucket() -> None:
        import boto3

        env = s3_env(s)
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=s.s3_bucket)

    return Service(
        name="s3",
        ports=[s.s3_port],
        argv=lambda: [str(BIN / "moto_server"), "-H", s.host, "-p", str(s.s3_port)],
        health=lambda: _http_ok(f"{s.s3_endpoint_url}/moto-api/data.json"),
        url=s.s3_endpoint_url,
        after_start=create_bucket,
        optional=True,
        wanted=lambda: s.s3,
    )


# ---------------------------------------------------------------------------------------- metrics

STATSD_EXPORTER_MODULE = "github.com/prometheus/statsd_exporter"
STATSD_EXPORTER_VERSION = "v0.28.0"


def statsd_exporter_bin(s: Settings) -> Path:
    return s.dist_dir / "go" / f"statsd_exporter-{STATSD_EXPORTER_VERSION}"


def fetch_statsd_exporter(s: Settings) -> Path:
    """Build Prometheus' statsd_exporter from the Go module proxy (once; it lands in the shared dist dir)."""
    exe = statsd_exporter_bin(s)
    if exe.exists():
        return exe
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise ServiceError("Go is needed to build statsd_exporter from the Go module proxy (make setup)")
    gobin = exe.parent / ".build"
    shutil.rmtree(gobin, ignore_errors=True)
    gobin.mkdir(parents=True)
    _run(
        [go, "install", f"{STATSD_EXPORTER_MODULE}@{STATSD_EXPORTER_VERSION}"],
        env={**os.environ, "GOBIN": str(gobin), "CGO_ENABLED": "0"},
        timeout=1800,
    )
    (gobin / "statsd_exporter").replace(exe)
    gobin.rmdir()
    return exe


def prometheus_config(s: Settings) -> dict[str, Any]:
    """What the stack's Prometheus scrapes: itself, Airflow (through the statsd exporter), the metrics task
    processes pushed (pushgateway, their own labels kept), and the model server's /metrics."""

    def job(name: str, port: int, **extra: Any) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [f"{s.host}:{port}"]}], **extra}

    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "scrape_configs": [
            job("prometheus", s.prometheus_port),
            job("airflow", s.statsd_exporter_port),
            job("pushgateway", s.pushgateway_port, honor_labels=True),
            job("model-server", s.serving_port),
        ],
    }


def _metrics(s: Settings) -> list[Service]:
    """Prometheus and the two ways metrics reach it: the statsd exporter (Airflow's own metrics, over StatsD)
    and the pushgateway (the project's metrics from short-lived task processes, via prometheus-client).
    Prometheus and the pushgateway are Debian's packages; the statsd exporter is built from the Go module
    proxy (Debian 12 does not package it)."""
    root = s.home / "prometheus"

    def need(exe: str, package: str) -> str:
        found = shutil.which(exe)
        if not found:
            raise ServiceError(f"{exe} was not found: install the Debian package `{package}` (make setup)")
        return found

    def prometheus_argv() -> list[str]:
        import yaml

        (root / "data").mkdir(parents=True, exist_ok=True)
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(s), sort_keys=False))
        return [
            need("prometheus", "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            "--storage.tsdb.retention.time=15d",
            f"--web.listen-address={s.host}:{s.prometheus_port}",
        ]

    def pushgateway_argv() -> list[str]:
        (s.home / "pushgateway").mkdir(parents=True, exist_ok=True)
        return [
            need("prometheus-pushgateway", "prometheus-pushgateway"),
            f"--web.listen-address={s.host}:{s.pushgateway_port}",
            # what was pushed survives a restart (a task's last run stays visible)
            f"--persistence.file={s.home / 'pushgateway' / 'metrics.db'}",
            "--persistence.interval=30s",
        ]

    def statsd_argv() -> list[str]:
        exe = statsd_exporter_bin(s)
        if not exe.exists():
            raise ServiceError(f"{exe.name} is not built: run `mlp fetch` (make setup builds it)")
        return [
            str(exe),
            f"--statsd.listen-udp={s.host}:{s.statsd_port}",
            f"--statsd.listen-tcp={s.host}:{s.statsd_port}",
            f"--web.listen-address={s.host}:{s.statsd_exporter_port}",
            f"--statsd.mapping-config={s.repo_root / 'docker' / 'prometheus' / 'statsd_mapping.yml'}",
        ]

    return [
        Service(
            name="statsd-exporter",
            ports=[s.statsd_exporter_port, s.statsd_port],
            argv=statsd_argv,
            health=lambda: _http_ok(f"http://{s.host}:{s.statsd_exporter_port}/metrics"),
            url=f"http://{s.host}:{s.statsd_exporter_port}/metrics",
        ),
        Service(
            name="pushgateway",
            ports=[s.pushgateway_port],
            argv=pushgateway_argv,
            health=lambda: _http_ok(f"{s.pushgateway_url}/-/ready"),
            url=s.pushgateway_url,
        ),
        Service(
            name="prometheus",
            ports=[s.prometheus_port],
            argv=prometheus_argv,
            health=lambda: _http_ok(f"{s.prometheus_url}/-/ready"),
            url=s.prometheus_url,
        ),
    ]


# ---------------------------------------------------------------------------------------- airflow


def _airflow(s: Settings) -> list[Service]:
    env = lambda: airflow_env(s)  # noqa: E731

    def migrate() -> None:
        import airflow

        write_airflow_cli_config(s)

        marker = s.home / "airflow" / f".migrated-{airflow.__version__}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        _run([str(BIN / "airflow"), "db", "migrate"], env=env())
        marker.touch()

    def component(name: str, health_key: str) -> Service:
        return Service(
            name=f"airflow-{name}",
            ports=[],
            argv=lambda: [str(BIN / "airflow"), name],
            health=lambda: airflow_health(s).get(health_key) == "healthy",
            env=env,
            start_timeout=120,
        )

    api = Service(
        name="airflow-api-server",
        ports=[s.airflow_port],
        argv=lambda: [str(BIN / "airflow"), "api-server", "--port", str(s.airflow_port), "--host", s.host],
        health=lambda: airflow_health(s).get("metadatabase") == "healthy",
        url=s.airflow_url,
        prepare=migrate,
        env=env,
        start_timeout=180,
    )
    return [
        api,
        component("scheduler", "scheduler"),
        component("dag-processor", "dag_processor"),
        component("triggerer", "triggerer"),
    ]


def spark_master_state(s: Settings) -> dict[str, Any]:
    """The standalone master's own status document (``/json/``): status, alive workers, cores, apps."""
    try:
        doc: dict[str, Any] = httpx.get(f"http://{s.host}:{s.spark_master_ui_port}/json/", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return doc


def _spark(s: Settings) -> list[Service]:
    """A standalone Spark cluster on loopback: the installed PySpark's own Master and Worker classes
    (``spark-class``), one worker with ``spark_worker_cores`` cores. Optional: ``MLP_SPARK_CLUSTER=1``."""

    def env() -> dict[str, str]:
        return {
            **os.environ,
            **spark_env(),
            "SPARK_LOCAL_IP": s.host,
            "SPARK_LOG_DIR": str(s.home / "logs"),
            "SPARK_WORKER_DIR": str(s.home / "spark" / "work"),
            "SPARK_NO_DAEMONIZE": "1",
        }

    def spark_class() -> str:
        return str(Path(spark_env()["SPARK_HOME"]) / "bin" / "spark-class")

    master = Service(
        name="spark-master",
        ports=[s.spark_master_port, s.spark_master_ui_port],
        argv=lambda: [
            spark_class(),
            "org.apache.spark.deploy.master.Master",
            "--host",
            s.host,
            "--port",
            str(s.spark_master_port),
            "--webui-port",
            str(s.spark_master_ui_port),
        ],
        health=lambda: spark_master_state(s).get("status") == "ALIVE",
        url=s.spark_cluster_url,
        env=env,
        optional=True,
        wanted=lambda: s.spark_cluster,
    )
    worker = Service(
        name="spark-worker",
        ports=[s.spark_worker_ui_port],
        argv=lambda: [
            spark_class(),
            "org.apache.spark.deploy.worker.Worker",
            s.spark_cluster_url,
            "--host",
            s.host,
            "--cores",
            str(s.spark_worker_cores),
            "--memory",
            s.spark_worker_memory,
            "--webui-port",
            str(s.spark_worker_ui_port),
            "--work-dir",
            str(s.home / "spark" / "work"),
        ],
        health=lambda: int(spark_master_state(s).get("aliveworkers", 0)) >= 1,
        url=f"http://{s.host}:{s.spark_worker_ui_port}",
        env=env,
        optional=True,
        wanted=lambda: s.spark_cluster,
    )
    return [master, worker]


def all_services(s: Settings) -> list[Service]:
    """Services in start order (dependencies first)."""
    from mlplatform.stack.k8s import k8s_services

    return [
        _postgres(s),
        _redis(s),
        _kafka(s),
        _registry(s),
        _s3(s),
        _mlflow(s),
        *_metrics(s),
        *_spark(s),
        *k8s_services(s),
        *_airflow(s),
    ]


def wait_healthy(service: Service, is_alive: Callable[[], bool], log_file: Path) -> None:
    deadline = time.monotonic() + service.start_timeout
    while time.monotonic() < deadline:
        if service.health():
            return
        if not is_alive():
            from mlplatform.stack.process import tail

            raise ServiceError(
                f"{service.name} exited during start. Last log lines ({log_file}):\n{tail(log_file, 30)}"
            )
        time.sleep(1)
    raise ServiceError(f"{service.name} did not become healthy within {service.start_timeout:.0f}s; see {log_file}")


def settings_json(s: Settings) -> dict[str, str]:
    """Values for the ${MLP_*} placeholders of airflow_settings.yaml."""
    return {**_mlp_env(s), "MLP_POSTGRES_PASSWORD": s.pg_password()}


def dump(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
