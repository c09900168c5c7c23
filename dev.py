#!/usr/bin/env python3
"""Project commands that work on a fresh machine with only Python 3.11+ and pip.

    python3 dev.py demo      # the main job: simulated LLM proxy traffic through the bus
    python3 dev.py test      # every test (a real Redis on 127.0.0.1:6379 is used if present)
    python3 dev.py lint      # ruff + mypy --strict
    python3 dev.py bench     # the benchmarks under benchmarks/

Each command first makes sure uv is available (installing it with pip if needed) and that the
locked development environment in .venv is in sync; extra arguments go to the tool it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MIN_PYTHON = (3, 11)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def _uv() -> list[str]:
    """Return the command that runs uv, installing it with pip when it is missing."""
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run(
        [sys.executable, "-m", "uv", "--version"], check=False, capture_output=True
    )
    if probe.returncode == 0:
        return [sys.executable, "-m", "uv"]
    print("uv not found: installing it with pip", flush=True)
    attempts = [
        [sys.executable, "-m", "pip", "install", "--quiet", "uv"],
        # Debian-style system Pythons refuse global installs (PEP 668); a user install works.
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--user",
            "--break-system-packages",
            "uv",
        ],
    ]
    for cmd in attempts:
        if subprocess.call(cmd) == 0:
            return [sys.executable, "-m", "uv"]
    sys.exit("could not install uv with pip; install it yourself (pip install uv) and retry")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Use this interpreter; never let uv try to download one (only package registries answer).
    env.setdefault("UV_PYTHON", sys.executable)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("UV_PROJECT_ENVIRONMENT", str(ROOT / ".venv"))
    return env


def _sync(uv: list[str], env: dict[str, str]) -> None:
    code = _run([*uv, "sync", "--locked", "--all-packages"], env)
    if code != 0:
        sys.exit(f"uv sync failed with exit code {code}")


def _tool(name: str) -> str:
    bindir = "Scripts" if os.name == "nt" else "bin"
    return str(ROOT / ".venv" / bindir / name)


def main(argv: list[str]) -> int:
    """Run one project command."""
    if sys.version_info < MIN_PYTHON:
        sys.exit(f"eventbus needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+, this is {sys.version}")
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    uv, env = _uv(), _env()
    _sync(uv, env)
    if command == "demo":
        return _run([_tool("eventbus"), "demo", *rest], env)
    if command == "test":
        return _run([_tool("pytest"), *rest], env)
    if command == "lint":
        checks = [
            [_tool("ruff"), "check", "."],
            [_tool("ruff"), "format", "--check", "."],
            [_tool("mypy")],
        ]
        return max(_run(cmd, env) for cmd in checks)
    if command == "bench":
        scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
        return max((_run([_tool("python"), str(s), *rest], env) for s in scripts), default=0)
    if command == "eventbus":
        return _run([_tool("eventbus"), *rest], env)
    print(f"unknown command {command!r}; commands: demo, test, lint, bench, eventbus")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
