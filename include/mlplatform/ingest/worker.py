"""The partition worker process: ``python -m mlplatform.ingest.worker`` with ``{"jobs": [...],
"parallelism": n}`` on stdin, and ``{"results": [...], "errors": [...]}`` as the last line of stdout.

It imports the heavy modules once (pyarrow, fastavro, confluent-kafka) and then forks one child per
partition job, up to ``parallelism`` at a time. Forking is safe here: this process creates no Kafka client
and starts no thread before it forks, and each child creates its own clients. A child gets only the
pages it writes, so N partitions cost one interpreter's imports, not N. Every process in the tree dies
with its parent (``PR_SET_PDEATHSIG``): an Airflow worker killed with kill -9 leaves no ingest behind.
Logs go to stderr, so into the task log.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlplatform.ingest.consume import PartitionJob, ingest_partition

log = logging.getLogger(__name__)


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere). ``parent``
    is the pid the parent had before forking: if it died before prctl took effect, this process has been
    re-parented already (to pid 1 or to a subreaper) and exits at once."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def die_with(parent: int) -> Any:
    """A preexec_fn for subprocess: the child dies with ``parent`` (this process)."""
    return lambda: die_with_parent(parent)


def _warm_up() -> None:
    """Import what every child needs, before forking (pyarrow probes pandas on first use: do it here)."""
    import confluent_kafka  # noqa: F401
    import confluent_kafka.schema_registry  # noqa: F401
    import fastavro  # noqa: F401
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    from mlplatform.ingest import schemas  # noqa: F401

    pa.array(["warm"])
    # Move everything imported so far out of the garbage collector's reach: a child's collections then
    # never write to (and so never copy) the pages it shares with this process.
    gc.collect()
    gc.freeze()


def _child(job: PartitionJob, out: Path, parent: int) -> int:
    die_with_parent(parent)
    try:
        payload: dict[str, Any] = {"result": ingest_partition(job).to_dict()}
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run with it
        log.exception("%s partition %s failed", job.topic, job.partition)
        payload, code = {"error": f"partition {job.partition}: {type(exc).__name__}: {exc}"}, 1
    out.write_text(json.dumps(payload))
    return code


def run_jobs(jobs: list[PartitionJob], parallelism: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Fork a child per job, at most ``parallelism`` at a time; collect results and errors."""
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    pending = list(jobs)
    running: dict[int, tuple[PartitionJob, Path]] = {}
    with tempfile.TemporaryDirectory(prefix="mlp-ingest-") as tmp:
        while pending or running:
            while pending and len(running) < max(1, parallelism):
                job = pending.pop(0)
                out = Path(tmp) / f"{job.partition}.json"
                sys.stdout.flush()
                sys.stderr.flush()
                me = os.getpid()
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child
                    code = 1
                    try:
                        code = _child(job, out, me)
                    finally:
                        logging.shutdown()
                        os._exit(code)
                running[pid] = (job, out)
            pid, status = os.wait()
            if pid not in running:
                continue
            job, out = running.pop(pid)
            data = json.loads(out.read_text()) if out.exists() else {}
            if "result" in data:
                results.append(data["result"])
            else:
                reason = data.get("error") or f"worker for partition {job.partition} died ({_status(status)})"
                errors.append(reason)
    return results, errors


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def main() -> int:
    from mlplatform.logs import configure

    configure("ingest-worker", stream=sys.stderr)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    _warm_up()  # while the parent is still asking the broker what there is to do
    spec = json.loads(sys.stdin.read())
    jobs = [PartitionJob(**j) for j in spec["jobs"]]
    results, errors = run_jobs(jobs, int(spec.get("parallelism", len(jobs))))
    sys.stdout.write(json.dumps({"results": results, "errors": errors}) + "\n")
    return 1 if errors else 0


def spec_of(jobs: list[PartitionJob], parallelism: int) -> str:
    return json.dumps({"jobs": [asdict(j) for j in jobs], "parallelism": parallelism})


if __name__ == "__main__":
    sys.exit(main())
