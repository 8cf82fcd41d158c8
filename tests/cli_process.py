"""`python -m llmos_edge ARGS` as a user runs it: a real process, this environment plus a few variables.

One helper for the tests that drive the CLI end to end (exit code, stdout, stderr as printed).
"""

from __future__ import annotations

import os
import subprocess
import sys


def llmos(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmos_edge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
