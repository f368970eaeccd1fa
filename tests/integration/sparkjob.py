"""The feature job as `build_features` submits it: spark-submit of spark_jobs/customer_features.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlplatform.stack.services import BIN, spark_env

ROOT = Path(__file__).resolve().parents[2]


def submit_feature_job(master: str, args: list[str], *conf: str) -> subprocess.CompletedProcess[str]:
    """Run the job on ``master`` with its ``args`` (``conf``: ``key=value`` Spark settings)."""
    return subprocess.run(  # noqa: S603
        [
            str(BIN / "spark-submit"),
            "--master",
            master,
            *(x for c in conf for x in ("--conf", c)),
            str(ROOT / "spark_jobs" / "customer_features.py"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **spark_env()},
        timeout=900,
    )
