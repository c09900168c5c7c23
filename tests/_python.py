"""`run_python`: a script run by a new Python process, for what a test cannot do in its own
(a fork from a process without the test run's leftover threads, what a process prints at its
exit, a multiprocessing parent of its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "run_python"]

ROOT = Path(__file__).resolve().parents[1]
"""The checkout's root: scripts run from there import the `tests` package."""


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -c code args...` from the checkout's root, its output captured as text; the
    caller judges the exit status."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
