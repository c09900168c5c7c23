"""Run a pytest file in a child process and collect each test's outcome: how the contract
suites prove they fail for broken buses (tests/core/test_contract_suite.py and
test_capability_contracts.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def child_outcomes(
    work: Path,
    *pytest_args: str,
    env: Mapping[str, str] | None = None,
    output: list[str] | None = None,
) -> dict[str, dict[str, str]]:
    """{test class: {test name: outcome}} of `pytest -rA` run on `work`/test_buses.py (its
    stdout and stderr appended to `output`, when given)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *pytest_args],
        cwd=work,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if output is not None:
        output.append(done.stdout + done.stderr)
    found: dict[str, dict[str, str]] = {}
    for outcome, cls, name in re.findall(
        r"^(PASSED|FAILED|ERROR|SKIPPED)\S* test_buses\.py::(\w+)::(\w+)",
        done.stdout,
        re.MULTILINE,
    ):
        found.setdefault(cls, {})[name] = outcome
    assert found, done.stdout + done.stderr
    return found
