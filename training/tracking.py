"""MLflow tracking for the training program (rank 0 only): params, step metrics, system metrics (MLflow's
CPU/GPU monitor plus NVML temperature), tags, and the final pyfunc model with signature."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from typing import Any

log = logging.getLogger(__name__)


def git_sha() -> str:
    if os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,  # noqa: S607
            cwd=os.path.dirname(__file__),
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def gpu_type() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "unknown"


class NvmlTemperature(threading.Thread):
    """Samples GPU temperature and SM clock through pynvml (MLflow's own monitor has no temperature)."""

    def __init__(self, log_fn: Any, interval: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.log_fn, self.interval, self.stop_event = log_fn, interval, threading.Event()

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no driver: nothing to sample
            return
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        step = 0
        while not self.stop_event.wait(self.interval):
            metrics = {}
            for i, h in enumerate(handles):
                metrics[f"system/gpu_{i}_temperature_c"] = float(
                    pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                )
                metrics[f"system/gpu_{i}_sm_clock_mhz"] = float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))
            self.log_fn(metrics, step)
            step += 1
        pynvml.nvmlShutdown()


class Tracker:
    """MLflow when a tracking URI is configured; otherwise a local-only run that logs to the console."""

    def __init__(
        self, uri: str, experiment: str, run_name: str, enabled: bool, system_metrics: bool, interval_s: float = 5.0
    ) -> None:
        self.enabled = bool(uri) and enabled
        self.run_id: str | None = None
        self._temps: NvmlTemperature | None = None
        if not self.enabled:
            return
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        self.run_name, self.system_metrics, self.interval_s = run_name, system_metrics, interval_s

    def start(self, resume_run_id: str | None) -> str | None:
        if not self.enabled:
            return None
        if self.system_metrics:
            self.mlflow.set_system_metrics_sampling_interval(self.interval_s)
            self.mlflow.set_system_metrics_samples_before_logging(1)
        run = self.mlflow.start_run(
            run_id=resume_run_id,
            run_name=None if resume_run_id else (self.run_name or None),
            log_system_metrics=self.system_metrics,
        )
        self.run_id = run.info.run_id
        if self.system_metrics:
            self._temps = NvmlTemperature(lambda m, s: self.mlflow.log_metrics(m, step=s), self.interval_s)
            self._temps.start()
        return self.run_id

    def params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            existing = self.mlflow.get_run(self.run_id).data.params
            new = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
            if new:
                self.mlflow.log_params(new)

    def tags(self, tags: dict[str, str]) -> None:
        if self.enabled:
            self.mlflow.set_tags(tags)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if self.enabled:
            self.mlflow.log_metrics(metrics, step=step)

    def log_model(self, model_dir: str, example: Any, predictions: Any) -> str | None:
        if not self.enabled:
            return None
        from mlflow.models import infer_signature

        from training.pyfunc import EscalationPyfunc

        code = os.path.dirname(os.path.abspath(__file__))
        info = self.mlflow.pyfunc.log_model(
            name="model",
            python_model=EscalationPyfunc(),
            artifacts={"model_dir": model_dir},
            code_paths=[code],
            signature=infer_signature(example, predictions),
            input_example=example,
            pip_requirements=["torch", "transformers", "pandas", "numpy", "mlflow"],
        )
        return str(info.model_uri)

    def end(self, status: str = "FINISHED") -> None:
        if self._temps:
            self._temps.stop_event.set()
        if self.enabled:
            self.mlflow.end_run(status=status)
