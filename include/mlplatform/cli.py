"""The ``mlp`` command line: the local stack (up, down, status, logs), event generation and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlplatform.config.settings import get_settings

app = typer.Typer(help="mlplatform: Kafka to a deployed model, on Airflow 3.", no_args_is_help=True)
console = Console()


def _stack():  # type: ignore[no-untyped-def]
    from mlplatform.stack.manager import Stack

    return Stack(get_settings())


@app.command()
def up(
    only: Annotated[
        str | None, typer.Option(help="comma-separated services to start, e.g. postgres,kafka,schema-registry")
    ] = None,
    kafka_sasl: Annotated[
        bool, typer.Option(help="the broker requires SASL/SCRAM (same as MLP_KAFKA_SASL=1; a fresh broker dir)")
    ] = False,
    s3: Annotated[bool, typer.Option(help="add a local S3 API (moto) for MLflow's artifacts (MLP_S3=1)")] = False,
    k8s: Annotated[
        bool, typer.Option(help="add a local Kubernetes control plane with simulated GPU nodes (MLP_K8S=1)")
    ] = False,
) -> None:
    """Start the local stack (PostgreSQL, Redis, Kafka, the schema registry, MLflow, Prometheus, Airflow). Safe
    to run again."""
    import os

    from mlplatform.stack.process import PortInUseError
    from mlplatform.stack.services import ServiceError

    for flag, var in ((kafka_sasl, "MLP_KAFKA_SASL"), (s3, "MLP_S3"), (k8s, "MLP_K8S")):
        if flag:  # the Airflow components (and so every task) inherit it
            os.environ[var] = "1"
            get_settings.cache_clear()
    if get_settings().k8s and not get_settings().kubeconfig:  # pods on simulated nodes: no log to follow
        os.environ.setdefault("MLP_POD_LOGS", "false")
        get_settings.cache_clear()

    stack = _stack()
    first_login = stack.admin_password() is None
    started = time.monotonic()
    try:
        with console.status("starting the local stack") as status:

            def report(name: str, msg: str) -> None:
                status.update(f"{name}: {msg}")
                console.log(f"[bold]{name}[/]: {msg}")

            stack.up(report, only=only.split(",") if only else None)
    except (PortInUseError, ServiceError) as exc:
        console.print(f"[red]mlp up failed:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    console.print(f"stack up in {time.monotonic() - started:.0f}s")
    _print_urls(show_password=first_login)


def _print_urls(show_password: bool = True) -> None:
    s = get_settings()
    stack = _stack()
    password = stack.admin_password()
    secret_file = s.home / "airflow" / "simple_auth_manager_passwords.json.generated"
    shown = password if show_password else f"(see {secret_file})"
    console.print(f"Airflow UI : {s.airflow_url}   login: {s.airflow_admin} / {shown}")
    console.print(f"MLflow UI  : {s.mlflow_uri}")
    console.print(f"Kafka      : {s.kafka_bootstrap}")
    from mlplatform.stack.services import airflow_cli_env_file

    console.print(f"Airflow CLI: source {airflow_cli_env_file(s)}   (then e.g. `airflow dags list`)")


@app.command()
def down() -> None:
    """Stop what `mlp up` started (and only that)."""
    stopped = _stack().down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status() -> None:
    """Each service with its pid, URL and health. Exits 1 when any service is unhealthy."""
    table = Table("service", "state", "pid", "url")
    rows = _stack().status()
    for r in rows:
        state = "[green]healthy[/]" if r.healthy else ("[yellow]unhealthy[/]" if r.running else "[red]stopped[/]")
        table.add_row(r.name, state, str(r.pid or "-"), r.url)
    console.print(table)
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="service name; omit to list the log files")] = None,
    lines: Annotated[int, typer.Option("-n", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("-f", help="follow the log")] = False,
) -> None:
    """Show a service's log."""
    from mlplatform.stack.process import tail

    stack = _stack()
    if service is None:
        for path in sorted(stack.log_dir.glob("*.log")):
            console.print(path.stem)
        return
    path = stack.log_file(service)
    if not path.exists():
        console.print(
            f"[red]no log for {service!r}[/] (known: {', '.join(p.stem for p in stack.log_dir.glob('*.log'))})"
        )
        raise typer.Exit(1)
    if follow:
        subprocess.run(["tail", "-n", str(lines), "-f", str(path)], check=False)  # noqa: S603,S607
    else:
        console.print(tail(path, lines), markup=False, highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow(ctx: typer.Context) -> None:
    """Run the Airflow CLI against the local stack, e.g. `mlp airflow dags trigger ml_pipeline --conf '{...}'`."""
    from mlplatform.stack.services import BIN, airflow_env

    res = subprocess.run([str(BIN / "airflow"), *ctx.args], env=airflow_env(get_settings()), check=False)  # noqa: S603
    raise typer.Exit(res.returncode)


@app.command()
def fetch(
    k8s: Annotated[
        bool, typer.Option(help="also build the Kubernetes control plane (about 12 min cold on 2 cores)")
    ] = False,
    background: Annotated[bool, typer.Option(help="with --k8s: start that build and return at once")] = False,
) -> None:
    """Fetch the service distributions: Kafka broker jars and Apicurio Registry from Maven Central, the statsd
    exporter built from the Go module proxy (and, with --k8s, the control plane)."""
    from mlplatform.stack.services import fetch_apicurio, fetch_kafka, fetch_statsd_exporter

    s = get_settings()
    if k8s:
        from mlplatform.stack.k8s import fetch_k8s

        console.print(f"k8s     : {fetch_k8s(s, background=background)}{' (building)' if background else ''}")
    console.print(f"kafka   : {fetch_kafka(s)}")
    console.print(f"registry: {fetch_apicurio(s)}")
    console.print(f"statsd  : {fetch_statsd_exporter(s)}")


@app.command()
def produce(
    events: Annotated[int, typer.Option(min=1, help="number of ticket events")] = 5000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same events)")] = 42,
    schema_version: Annotated[int, typer.Option(min=1, max=2, help="ticket contract version (2 adds language)")] = 1,
    poison_rate: Annotated[float, typer.Option(min=0, max=0.5, help="share of poison records mixed in")] = 0.0,
    late_rate: Annotated[float, typer.Option(min=0, max=1, help="share of tickets with an event time days back")] = 0.0,
    days_back: Annotated[
        int, typer.Option(min=0, help="move the whole event window this many days back (a backfill)")
    ] = 0,
    drift: Annotated[
        float, typer.Option(min=0, max=1, help="shift the world the model learned (0: none, 1: the most)")
    ] = 0.0,
) -> None:
    """Write synthetic ticket and outcome events to Kafka, serialized through the Schema Registry."""
    from mlplatform.pipeline.stages import produce_events

    result = produce_events(
        events=events,
        seed=seed,
        schema_version=schema_version,
        poison_rate=poison_rate,
        late_rate=late_rate,
        days_back=days_back,
        drift=drift,
    )
    console.print_json(data=result)


@app.command()
def ingest(
    topic: Annotated[str, typer.Argument(help="the topic to land, e.g. support.tickets")],
    max_records: Annotated[int, typer.Option(min=0, help="record budget (0: none)")] = 0,
    max_seconds: Annotated[float, typer.Option(min=0, help="time budget: land, commit and return (0: none)")] = 0,
    run_id: Annotated[str | None, typer.Option(help="run id in the manifest (default: manual__<time>)")] = None,
    group: Annotated[str | None, typer.Option(help="consumer group (default: the pipeline's)")] = None,
    parallelism: Annotated[int, typer.Option(min=0, help="partition worker processes (0: one per core)")] = 0,
    dlq_max_share: Annotated[float, typer.Option(min=0, max=1, help="fail when more than this goes to the DLQ")] = 0.05,
    chunk_records: Annotated[int, typer.Option(min=1, help="records per landed file and transaction")] = 500_000,
    row_group_records: Annotated[int, typer.Option(min=1, help="records per Parquet row group")] = 50_000,
) -> None:
    """One bounded, exactly-once ingest of TOPIC, with exactly the code of the DAG task. Prints its result as
    JSON; exits 1 when the DLQ share passed the threshold (the data and the offsets are committed)."""
    import logging
    from datetime import UTC, datetime

    from mlplatform.ingest.kafka import DeadLetterAlert
    from mlplatform.logs import configure
    from mlplatform.pipeline.stages import ingest_topic

    configure("mlp")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    run_id = run_id or f"manual__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    try:
        result = ingest_topic(
            topic,
            run_id,
            max_records=max_records,
            max_seconds=max_seconds,
            group=group,
            parallelism=parallelism,
            dlq_max_share=dlq_max_share,
            chunk_records=chunk_records,
            row_group_records=row_group_records,
        )
    except DeadLetterAlert as exc:
        console.print(f"[red]dead-letter alert:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    sys.stdout.write(json.dumps(result) + "\n")


@app.command()
def dlq(
    topic: Annotated[str, typer.Argument(help="the source topic (its DLQ is <topic>.dlq)")],
    limit: Annotated[int, typer.Option(min=1, help="records to show")] = 20,
) -> None:
    """Show what a topic's DLQ holds and why: source offset, reason class and reason of each record."""
    from mlplatform.ingest.kafka import read_dead_letters
    from mlplatform.pipeline.endpoints import local

    table = Table("source", "kind", "reason", "run")
    rows = read_dead_letters(local().kafka, topic, limit)
    for r in rows:
        table.add_row(r["source"], r["kind"], r["reason"], r["run_id"])
    console.print(table)
    console.print(f"{len(rows)} shown (committed records only)")


@app.command("quarantine")
def quarantine_list() -> None:
    """The batches held in quarantine (failed validation): topic, batch, rows, what failed, Data Docs page."""
    from mlplatform.pipeline.stages import quarantine

    held = quarantine()
    table = Table("topic", "batch", "rows", "failed", "Data Docs")
    for h in held:
        table.add_row(h["topic"], h["batch"], str(h["rows"]), escape("\n".join(h["failed"])), h["docs"])
    console.print(table)
    console.print(f"{len(held)} in quarantine; `mlp redrive BATCH` re-validates one after a fix")


def _overrides(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is None or not name.strip():
            raise typer.BadParameter(f"{pair!r}: expected NAME=DAYS, e.g. stale_before=90", param_hint="--set")
        out[name.strip()] = number
    return out


@app.command()
def redrive(
    batch: Annotated[str, typer.Argument(help="the quarantined batch ('' for every one)")] = "",
    topic: Annotated[str, typer.Option(help="the batch's topic (default: search every contract topic)")] = "",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="suite parameter in days for this re-drive: NAME=DAYS")
    ] = None,
    here: Annotated[bool, typer.Option(help="run here instead of through Airflow (no Asset event is emitted)")] = False,
    timeout: Annotated[int, typer.Option(help="seconds to wait for the Airflow run")] = 600,
) -> None:
    """Validate a quarantined batch again with the current suite; if it passes, it flows on to the features.
    Through Airflow by default (the `redrive_batch` DAG, which emits the validated Asset); exits 1 when the
    batch stays in quarantine."""
    overrides = _overrides(set_ or [])
    if here:
        from mlplatform.pipeline.stages import redrive_batches
        from mlplatform.validation.suites import ValidationFailed

        try:
            result = redrive_batches(batch, topic, overrides)
        except (LookupError, ValueError, ValidationFailed) as exc:
            console.print(f"[red]{escape(str(exc))}[/]")
            raise typer.Exit(1) from exc
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        raise typer.Exit(1 if result["stayed"] and not result["released"] else 0)
    from mlplatform.stack.airflow_api import AirflowApiError, AirflowClient

    s = get_settings()
    client = AirflowClient(s.airflow_url, s.airflow_admin, _stack().admin_password() or "")
    client.wait_for_dag("redrive_batch")
    run_id = client.trigger("redrive_batch", {"batch": batch, "topic": topic, "overrides": overrides})
    console.print(f"triggered redrive_batch run {run_id}")
    state = client.wait_for_run("redrive_batch", run_id, timeout=timeout)
    console.print(f"redrive_batch finished: {state} (task log: {s.airflow_url}/dags/redrive_batch/runs/{run_id})")
    if state != "success":
        raise typer.Exit(1)
    try:
        result = client.xcom("redrive_batch", run_id, "redrive")
    except AirflowApiError:  # the task skipped: nothing was in quarantine
        result = {"released": [], "stayed": []}
    sys.stdout.write(json.dumps(result, default=str) + "\n")


schemas_app = typer.Typer(help="The data contracts in include/schemas and the Schema Registry.")
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("check")
def schemas_check(
    url: Annotated[str | None, typer.Option(help="a registry to check against (default: a throwaway one)")] = None,
    schema_dir: Annotated[Path | None, typer.Option(help="contracts dir (default: include/schemas)")] = None,
) -> None:
    """Prove the contracts deployable: each subject's history registers under its compatibility mode in a
    throwaway registry (or, with --url, each version the registry lacks is compatible with what it holds)."""
    from mlplatform.ingest import schemas

    directory = schema_dir or get_settings().schema_dir
    try:
        if url:
            problems = schemas.check_against(schemas.RegistryConfig(url), directory)
        else:
            from mlplatform.stack.registry import scratch_registry

            with scratch_registry(get_settings()) as cfg:
                ids = schemas.register_all(cfg, directory)
                problems = []
                console.print(f"registered in a scratch registry: {ids}")
    except schemas.SchemaContractError as exc:
        problems = [str(exc)]
    for p in problems:
        console.print(f"[red]refused:[/] {escape(p)}")
    if problems:
        raise typer.Exit(1)
    console.print("[green]all data contracts are compatible[/]")


@schemas_app.command("register")
def schemas_register(
    url: Annotated[str | None, typer.Option(help="registry URL (default: the local stack's)")] = None,
) -> None:
    """Register every subject's versions (oldest first) with its compatibility mode."""
    from mlplatform.ingest import schemas

    cfg = schemas.RegistryConfig(url or get_settings().schema_registry_url)
    try:
        console.print_json(data=schemas.register_all(cfg))
    except schemas.SchemaContractError as exc:
        console.print(f"[red]refused:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc


@app.command()
def rollback(
    why: Annotated[str, typer.Option(help="the reason, kept in the audit trail")] = "manual rollback",
    to: Annotated[
        str | None, typer.Option(help="a version to return to (default: the one before the last promotion)")
    ] = None,
    who: Annotated[str | None, typer.Option(help="who asks (default: $USER)")] = None,
) -> None:
    """Return `champion` to the previous version (the one before its last promotion). The model server follows
    the alias, so it serves that version within seconds, without a restart."""
    import getpass

    from mlplatform.pipeline.stages import rollback_champion
    from mlplatform.registry.audit import RollbackError

    try:
        moved = rollback_champion(who or getpass.getuser(), why, to)
    except RollbackError as exc:
        console.print(f"[red]refused:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    console.print_json(data=moved)


@app.command()
def champion(
    limit: Annotated[int, typer.Option(min=1, help="records to show, newest last")] = 20,
) -> None:
    """Who moved `champion`, when and why (the audit trail in the model registry), and what it is now."""
    from mlflow import MlflowClient

    from mlplatform.registry import audit

    s = get_settings()
    table = Table("at", "from", "to", "kind", "who", "why", "applied")
    for r in audit.history(MlflowClient(s.mlflow_uri), s.model_name)[-limit:]:
        table.add_row(
            r["at"], str(r["from"]), r["to"], r["kind"], escape(r["who"]), escape(r["why"]), str(r["applied"])
        )
    console.print(table)


@app.command()
def predict(
    customer_id: Annotated[str, typer.Option()],
    subject: Annotated[str, typer.Option()],
    body: Annotated[str, typer.Option()],
) -> None:
    """Ask the local model server for an escalation prediction."""
    from mlplatform.serving.deploy import predict as do_predict

    console.print_json(data=do_predict(get_settings(), {"customer_id": customer_id, "subject": subject, "body": body}))


@app.command()
def demo(
    events: Annotated[int, typer.Option(min=50, help="events to generate and push through the chain")] = 2000,
    timeout: Annotated[int, typer.Option(help="seconds to wait for the pipeline")] = 1800,
) -> None:
    """Run the whole chain through Airflow (ml_pipeline) and print the URLs, the login and a prediction."""
    from mlplatform.serving.deploy import predict as do_predict
    from mlplatform.stack.airflow_api import AirflowClient

    s = get_settings()
    stack = _stack()
    if not all(r.healthy for r in stack.status()):
        up(only=None)
    client = AirflowClient(s.airflow_url, s.airflow_admin, stack.admin_password() or "")
    with console.status("waiting for the dag-processor to parse ml_pipeline"):
        client.wait_for_dag("ml_pipeline")
    client.unpause("ml_pipeline")
    run_id = client.trigger("ml_pipeline", {"events": events})
    console.print(f"triggered ml_pipeline run {run_id}")
    with console.status("ml_pipeline running") as st:
        state = client.wait_for_run(
            "ml_pipeline",
            run_id,
            timeout=timeout,
            on_poll=lambda _: st.update(f"ml_pipeline: {_summarise(client.task_states('ml_pipeline', run_id))}"),
        )
    console.print(f"ml_pipeline finished: {state}")
    if state != "success":
        console.print(f"task states: {client.task_states('ml_pipeline', run_id)}")
        console.print("see the task logs in the Airflow UI, or `mlp logs airflow-scheduler`")
        raise typer.Exit(1)
    _print_urls()
    request = {
        "customer_id": "C000001",
        "subject": "Production outage",
        "body": "Our production system is down and customers are affected.",
    }
    console.print(f"Model server: {s.serving_url}  request: {json.dumps(request)}")
    console.print(f"Prediction : {json.dumps(do_predict(s, request))}")


def _summarise(states: dict[str, str]) -> str:
    done = sum(1 for v in states.values() if v == "success")
    running = [k for k, v in states.items() if v == "running"]
    return f"{done}/{len(states)} tasks done" + (f", running {', '.join(running)}" if running else "")


gpu_app = typer.Typer(help="The GPU quota: pools from the real inventory, GPU-hours and cost.")
app.add_typer(gpu_app, name="gpu")


def _airflow_client():  # type: ignore[no-untyped-def]
    import httpx

    from mlplatform.stack.airflow_api import AirflowClient

    s = get_settings()
    try:
        httpx.get(f"{s.airflow_url}/api/v2/version", timeout=5)
    except httpx.HTTPError as exc:
        console.print(f"[red]Airflow's API is not reachable at {s.airflow_url}[/] ({exc}); start the stack: mlp up")
        raise typer.Exit(1) from exc
    return AirflowClient(s.airflow_url, s.airflow_admin, _stack().admin_password() or "")


def _gpu_sync(dry_run: bool = False):  # type: ignore[no-untyped-def]
    """sync_gpu_pools, with a one-line error where the cluster's API cannot be reached."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from mlplatform.gpu.sync import sync_gpu_pools

    s = get_settings()
    try:
        return sync_gpu_pools(s, None if dry_run else _airflow_client(), dry_run=dry_run)
    except (HTTPError, ApiException, OSError) as exc:
        where = s.kubeconfig or "the local control plane (start it: mlp up --k8s)"
        console.print(f"[red]the Kubernetes API of {where} is not reachable[/]: {str(exc).splitlines()[0][:300]}")
        raise typer.Exit(1) from exc


@gpu_app.command("sync")
def gpu_sync() -> None:
    """Size every GPU pool from the cluster's node allocatable (Ready, schedulable nodes) and the quota file."""
    result = _gpu_sync()
    table = Table("pool", "slots", "where from")
    for plan in result.pools:
        mark = " [yellow](changed)[/]" if plan.name in result.changed else ""
        table.add_row(plan.name + mark, str(plan.slots), plan.description)
    console.print(table)
    if result.kueue:
        console.print(f"Kueue: {len(result.kueue)} objects applied (the same shares as ClusterQueues)")


@gpu_app.command("kueue")
def gpu_kueue() -> None:
    """Print the quota as Kueue objects (ClusterQueue + LocalQueue per GPU pool, sized from the cluster's
    inventory now), for a cluster whose Kueue objects are applied by GitOps rather than by `mlp gpu sync`."""
    import yaml

    from mlplatform.gpu.kueue import kueue_manifests

    result = _gpu_sync(dry_run=True)
    typer.echo(yaml.safe_dump_all(kueue_manifests(result.pools), sort_keys=False), nl=False)


@gpu_app.command("report")
def gpu_report(
    days: Annotated[int, typer.Option(min=1, help="how far back to count")] = 7,
) -> None:
    """GPU-hours and cost per team and per user (Airflow's metadata: duration × pool_slots, by profile, at the
    profile's price), and each run's estimate beside its actual cost."""
    from datetime import UTC, datetime, timedelta

    from mlplatform.gpu.cost import price_of, totals, usage

    rows = usage(_airflow_client(), datetime.now(UTC) - timedelta(days=days))
    for by in ("team", "user"):
        table = Table(by, "profile", "GPU-hours", "USD", title=f"GPU use per {by}, last {days} days")
        for (who, profile), (hours, usd) in sorted(totals(rows, by).items()):
            table.add_row(who, profile, f"{hours:.3f}", f"{usd:.2f}")
        console.print(table)
    runs = Table("dag", "run", "team", "user", "profile", "GPUs", "state", "estimate USD", "actual USD", title="runs")
    for r in rows:
        est = "-" if r.estimate_usd is None else f"{r.estimate_usd:.3f}"
        actual = f"{r.gpu_hours * price_of(r.profile):.3f}"
        runs.add_row(r.dag_id, r.run_id, r.team, r.user, r.profile, str(r.gpus), r.state, est, actual)
    console.print(runs)


k8s_app = typer.Typer(help="The local Kubernetes control plane (`mlp up --k8s` starts it).")
app.add_typer(k8s_app, name="k8s")


@k8s_app.command("init")
def k8s_init() -> None:
    """Write the control plane's throwaway PKI and admin kubeconfig into the state dir."""
    from mlplatform.stack.k8s import init_files

    console.print(f"kubeconfig: {init_files(get_settings())}")


@k8s_app.command("bootstrap")
def k8s_bootstrap() -> None:
    """Create the namespaces, service accounts, simulated GPU nodes, priority classes, RBAC and GPU operator
    configs on the running API server (what `mlp up --k8s` does after kwok starts). Safe to run again."""
    from mlplatform.stack.k8s import bootstrap_cluster

    bootstrap_cluster(get_settings())
    console.print("cluster objects applied")


if __name__ == "__main__":
    sys.exit(app())
