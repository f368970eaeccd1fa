"""
### monitor_drift: is the served model still seeing the world it learned?

Hourly, enabled by default. Compares the champion's last `window_hours` of served predictions (logged by
the model server with their features) with its training snapshot (features) and its scores on the gate's
evaluation set (score): PSI and KS per feature and for the score, logged to MLflow (experiment
`ticket_escalation-monitoring`). A PSI above `threshold` on any of them emits the drift Asset, which
schedules `train_model`: retraining, then the gate, then a swap if the new model wins. The same drift of
the same version is signalled once per `cooldown_hours` (it persists from hour to hour, and a retrained
challenger may lose); a new column drifting or a new champion signals at once. Fewer than `min_rows`
predictions in the window: nothing is judged.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, get_current_context, task

from mlplatform.pipeline import assets


@dag(
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    default_args=assets.default_args(),
    tags=["mlplatform", "monitor", "drift"],
    params={
        "window_hours": Param(
            24, type="number", exclusiveMinimum=0, maximum=24 * 30, description="hours of predictions"
        ),
        "threshold": Param(0.2, type="number", exclusiveMinimum=0, description="PSI above which a column has drifted"),
        "min_rows": Param(100, type="integer", minimum=1, description="fewer predictions than this: no verdict"),
        "cooldown_hours": Param(
            24, type="number", minimum=0, description="the same drift of the same version signals once per this"
        ),
    },
    doc_md=__doc__,
)
def monitor_drift() -> None:
    @task
    def measure() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlplatform.config.settings import get_settings
        from mlplatform.monitoring.drift import NoChampion, champion_drift

        p = get_current_context()["params"]
        try:
            report = champion_drift(
                get_settings(),
                float(p["window_hours"]),
                float(p["threshold"]),
                int(p["min_rows"]),
                cooldown_hours=float(p["cooldown_hours"]),
            )
        except NoChampion as exc:  # nothing serves yet: nothing to watch
            raise AirflowSkipException(str(exc)) from exc
        return report.to_dict()

    @task.short_circuit
    def drifted(report: dict) -> bool:
        """Go on (and emit the drift Asset) only when something drifted that was not signalled lately."""
        return bool(report["signal"])

    @task(outlets=[Asset(assets.DRIFT)])
    def signal(report: dict) -> dict:
        event = {k: report[k] for k in ("version", "drifted", "psi", "rows", "window_end")}
        get_current_context()["outlet_events"][Asset(assets.DRIFT)].extra = event
        return event

    report = measure()
    drifted(report) >> signal(report)


monitor_drift()
