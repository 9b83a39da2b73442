"""The committed protobuf stubs must match what proto/ generates."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_committed_stubs_are_up_to_date() -> None:
    completed = subprocess.run([sys.executable, "scripts/generate_stubs.py", "--check"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
