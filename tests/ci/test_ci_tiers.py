"""The CI tiers of .ci/run: the time budget may skip any HIL test except the must-run systemd module.

Runs the real pytest on tests/hil in a child process with a deadline already past. With the QEMU tier
switched off (LLMOS_EDGE_HIL=0) nothing boots, and the skip reason shows which rule decided: the
budgeted tests name the CI time budget, the must-run ones only the switched-off tier.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def hil_skips(marker: str) -> str:
    env = {**os.environ, "LLMOS_EDGE_HIL_DEADLINE": "1", "LLMOS_EDGE_HIL": "0"}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-m", marker, "tests/hil"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


def test_the_budget_never_skips_the_must_run_systemd_tests() -> None:
    out = hil_skips("hil and hil_must_run")
    assert "test_guest_systemd.py" in out and "3 skipped" in out, out
    assert "CI time budget" not in out and "LLMOS_EDGE_HIL=0" in out, out


def test_the_budget_skips_the_other_hil_tests_saying_why() -> None:
    out = hil_skips("hil and not hil_must_run")
    assert "test_guest_systemd.py" not in out, out
    assert "CI time budget" in out and "LLMOS_EDGE_HIL_DEADLINE" in out, out


def test_ci_run_has_the_three_tiers_in_order() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    tiers = ['-m "not hil and not soak"', '-m "hil and hil_must_run"', '-m "hil and not hil_must_run"']
    positions = [script.index(t) for t in tiers]
    assert positions == sorted(positions)
    assert script.index("LLMOS_EDGE_HIL_DEADLINE") > positions[1]  # the budget starts after the must-run tier
