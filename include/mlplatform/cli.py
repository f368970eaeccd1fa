"""The ``mlp`` command line: the local stack (up, down, status, logs), event generation and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlplatform.config.settings import get_settings

app = typer.Typer(help="mlplatform: Kafka to a deployed model, on Airflow 3.", no_args_is_help=True)
console = Console()


def _stack():  # type: ignore[no-untyped-def]
    from mlplatform.stack.manager import Stack

    return Stack(get_settings())


@app.command()
def up() -> None:
    """Start the local stack (Kafka, PostgreSQL, Redis, MLflow, Airflow). Safe to run again."""
    from mlplatform.stack.process import PortInUseError
    from mlplatform.stack.services import ServiceError

    stack = _stack()
    first_login = stack.admin_password() is None
    started = time.monotonic()
    try:
        with console.status("starting the local stack") as status:

            def report(name: str, msg: str) -> None:
                status.update(f"{name}: {msg}")
                console.log(f"[bold]{name}[/]: {msg}")

            stack.up(report)
    except (PortInUseError, ServiceError) as exc:
        console.print(f"[red]mlp up failed:[/] {exc}")
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
def produce(
    events: Annotated[int, typer.Option(min=1, help="number of ticket events")] = 5000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same events)")] = 42,
) -> None:
    """Write synthetic ticket and outcome events to Kafka as Confluent-framed Avro."""
    from mlplatform.pipeline.stages import produce_events

    result = produce_events(events=events, seed=seed)
    console.print(json.dumps(result))


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
        up()
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


if __name__ == "__main__":
    sys.exit(app())
