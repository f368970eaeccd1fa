"""The local launcher: the same training entrypoint as the GPU container, run as a subprocess.

The output directory is run-scoped, so an Airflow retry of the train task resumes from the checkpoint the
previous try left. A SIGTERM to the task (a kill from the UI) is forwarded so the program checkpoints first.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    pass


def training_argv(config: Path, overrides: dict[str, Any]) -> list[str]:
    argv = [sys.executable, "-m", "training", "--config", str(config)]
    for key, value in overrides.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag, json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)]
    return argv


def run_training(config: Path, overrides: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Run the training program to completion; return its result JSON (run id, model URI, metrics)."""
    result_file = Path(overrides["output_dir"]) / "result.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    argv = training_argv(config, {**overrides, "result_file": str(result_file)})
    log.info("launching: %s", " ".join(argv))
    # the program's own JSON log lines say which task and stage they belong to (the AIRFLOW_CTX_* ids are
    # inherited; the stage and team are this process's log context)
    from mlplatform.logs import context_from_env

    ctx = context_from_env()
    env = {**os.environ, "MLP_STAGE": "train", **({"MLP_TEAM": ctx["team"]} if ctx.get("team") else {})}
    proc = subprocess.Popen(  # noqa: S603
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread
        previous = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("[train] %s", line.rstrip())
        code = proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise TrainingFailed(
            f"training exited with {code}" + (" (pre-empted; checkpoint written)" if code == 143 else "")
        )
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result
