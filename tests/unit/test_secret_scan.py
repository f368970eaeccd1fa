"""The repository's secret scan (`make lint` runs it over every tracked file): the committed baseline holds no
finding, and the scanner really fails on a planted credential, so a green lint means something."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOOK = Path(sys.executable).parent / "detect-secrets-hook"


def test_the_baseline_holds_no_accepted_secret():
    baseline = json.loads((ROOT / ".secrets.baseline").read_text())
    assert baseline["results"] == {}, "secrets belong in the state dir or a connection, not in an allow-list"


def test_a_planted_credential_fails_the_scan(tmp_path):
    planted = tmp_path / "settings.py"
    # assembled at run time so this file itself stays clean for the scanner
    key_id, secret = "AKIA" + "J7Q2XK5M3ZL8WD4R", "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYzQ9u2Lk4Tn"
    planted.write_text(f'AWS_ACCESS_KEY_ID = "{key_id}"\naws_secret_access_key = "{secret}"\n')
    found = subprocess.run(
        [str(HOOK), "--baseline", str(ROOT / ".secrets.baseline"), str(planted)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert found.returncode != 0
    assert "AWS Access Key" in found.stdout + found.stderr
