"""What every benchmark does with its result: the JSON report to ``out`` and stdout, then one summary line
(the last line of output, which the smoke tests and a reader look for)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(report: dict[str, Any], out: str, summary: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(summary)
