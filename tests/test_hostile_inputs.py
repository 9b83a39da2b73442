"""The script behind docs/hostile-inputs.md runs, and every hostile input it tries is refused as it should be."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_every_hostile_input_of_the_report_is_refused() -> None:
    completed = subprocess.run([sys.executable, "scripts/hostile_inputs.py"], cwd=ROOT, capture_output=True,
                               text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr[-2000:]
    rows = [line.split("|") for line in completed.stdout.splitlines()
            if line.startswith("| ") and "surface" not in line]
    assert len(rows) == 8
    for row in rows:
        tried, refused, silent, crashed = (int(cell) for cell in row[2:6])
        assert (silent, crashed) == (0, 0) and refused == tried, row
