"""``python -m training [--config cfg.yaml] [--key value ...]``: YAML < TRAIN_* env < flags.

Flags are the config's field names with dashes (``--max-steps 100 --encoder minilm``); list values take
YAML (``--text-fields '[subject, body]'``). Exit code 143 means a SIGTERM checkpoint was written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import yaml


def parse_flags(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    ap = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", help="YAML config file")
    known, rest = ap.parse_known_args(argv)
    flags: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        tok = rest[i]
        if not tok.startswith("--"):
            ap.error(f"unexpected argument {tok!r}")
        key = tok[2:].replace("-", "_")
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            raw = rest[i + 1]
            i += 2
        else:
            raw, i = "true", i + 1
        flags[key] = yaml.safe_load(raw) if raw not in ("", None) else raw
    return known.config, flags


def main(argv: list[str] | None = None) -> int:
    from training.logs import configure

    configure("training")
    from pydantic import ValidationError

    from training.config import load

    config_path, flags = parse_flags(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load(config_path, flags)
    except ValidationError as exc:
        print(f"invalid training config:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2
    from training.loop import train

    result = train(cfg)
    logging.getLogger("training").info("done: %s", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
