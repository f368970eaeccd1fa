"""Entry point of one partition worker process: a PartitionJob as JSON on stdin, the result as the last
line of stdout (``{"result": ...}`` or ``{"error": ...}``). Logs go to stderr, so into the task log."""

from __future__ import annotations

import json
import logging
import sys

from mlplatform.ingest.consume import PartitionJob, ingest_partition


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = PartitionJob(**json.loads(sys.stdin.read()))
    try:
        result = ingest_partition(job)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run with it
        logging.getLogger(__name__).exception("partition %s failed", job.partition)
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    sys.stdout.write(json.dumps({"result": result.to_dict()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
