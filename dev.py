#!/usr/bin/env python3
"""Project commands that work on a fresh machine with only Python 3.11+ and pip.

    python3 dev.py demo      # the main job: simulated LLM proxy traffic through the bus
    python3 dev.py test      # every test (a real Redis on 127.0.0.1:6379 is used if present)
    python3 dev.py lint      # ruff + mypy --strict
    python3 dev.py bench     # the benchmarks under benchmarks/
    python3 dev.py wheels    # wheels of the four distributions into dist/ (--out-dir DIR: there)
    python3 dev.py eventbus  # the eventbus command of the development environment
    python3 dev.py uv        # uv itself, as dev.py runs it (e.g. `python3 dev.py uv lock`)

Each command first makes sure uv is available and that the locked development environment in
.venv is in sync; extra arguments go to the tool it runs.

It leaves your own environment alone: uv is used from PATH when it is there, otherwise it is
installed once into .venv-tools/ (git-ignored, beside .venv), never into the Python or the
virtual environment you run dev.py with; and uv always works on this project's .venv, whatever
virtual environment is active in your shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MIN_PYTHON = (3, 11)
TOOLS = ROOT / ".venv-tools"
BIN = "Scripts" if os.name == "nt" else "bin"


def _run(cmd: list[str], env: Mapping[str, str] | None = None) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def private_uv(tools: Path = TOOLS) -> Path:
    """Where dev.py keeps its own uv: `pip install --target` puts the executable in bin/."""
    name = "uv.exe" if os.name == "nt" else "uv"
    return tools / "uv" / BIN / name


def uv_install_command(tools: Path = TOOLS, python: str = sys.executable) -> list[str]:
    """The pip command that installs uv into dev.py's private folder, and nowhere else.

    `--target` keeps it out of the running interpreter and any active virtual environment
    (and so out of reach of PEP 668's "externally managed" refusal, which guards those).
    """
    return [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(tools / "uv"),
        "uv",
    ]


def find_uv(tools: Path = TOOLS, python: str = sys.executable) -> list[str] | None:
    """The command that runs a uv already there, or None: on PATH, dev.py's private one, or
    the uv module of the interpreter running dev.py (used as it is, never installed there)."""
    found = shutil.which("uv")
    if found:
        return [found]
    private = private_uv(tools)
    if private.is_file():
        return [str(private)]
    probe = subprocess.run([python, "-m", "uv", "--version"], check=False, capture_output=True)
    if probe.returncode == 0:
        return [python, "-m", "uv"]
    return None


def _uv() -> list[str]:
    """Return the command that runs uv, installing it privately when there is none."""
    existing = find_uv()
    if existing is not None:
        return existing
    print(f"uv not found on PATH: installing it with pip into {TOOLS.name}/", flush=True)
    if subprocess.call(uv_install_command()) != 0 or not private_uv().is_file():
        sys.exit(
            "could not install uv with pip; install it yourself (see "
            "https://docs.astral.sh/uv/getting-started/installation/) and retry"
        )
    return [str(private_uv())]


def uv_environment(environ: Mapping[str, str], root: Path = ROOT) -> dict[str, str]:
    """The environment dev.py runs uv and the tools with.

    - VIRTUAL_ENV is dropped: an environment active in the user's shell is not this project's,
      and uv would warn on every run that it ignores it.
    - UV_PROJECT_ENVIRONMENT is always this project's .venv (the tools are run from there).
    - This interpreter, and never a downloaded one (only package registries may be reached).
    """
    env = {k: v for k, v in environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(root / ".venv")
    env.setdefault("UV_PYTHON", sys.executable)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    return env


def _sync(uv: list[str], env: Mapping[str, str]) -> None:
    # Bytecode is compiled at install, as pip does: with PYTHONDONTWRITEBYTECODE set (as on
    # some CI machines) nothing else writes it, and every `eventbus` command, demo process and
    # test child would compile its imports again (`eventbus --version`: 2 s of CPU, not 0.6 s).
    code = _run([*uv, "sync", "--locked", "--all-packages", "--compile-bytecode"], env)
    if code != 0:
        sys.exit(f"uv sync failed with exit code {code}")
    # The workspace's own packages are installed editable, so uv leaves their sources alone.
    sources = [str(path) for path in workspace_sources() if path.is_dir()]
    _run([_tool("python"), "-m", "compileall", "-q", *sources], env)


def workspace_sources(root: Path = ROOT) -> list[Path]:
    """The `src` folder of every workspace member (`[tool.uv.workspace] members`)."""
    import tomllib  # here, not at the top: Python 3.10 must reach main()'s version message

    with (root / "pyproject.toml").open("rb") as f:
        members: list[str] = tomllib.load(f)["tool"]["uv"]["workspace"]["members"]
    return [root / member / "src" for member in members]


def _tool(name: str) -> str:
    return str(ROOT / ".venv" / BIN / name)


def test_workers(args: list[str]) -> list[str]:
    """pytest-xdist options for `dev.py test`: three processes, each test file in one of them
    (a file's module fixtures, such as a fresh venv, are then built once). The suite spends
    most of its time waiting on servers, child processes and timeouts: on two cores, two
    processes kept them busy a third of the time (user + sys 335 s over 488 s), three take the
    run from about 490 s to about 305 s. Nothing is added when the caller chose (`-n 0` runs
    in one process)."""
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in args)
    return [] if chosen else ["-n", "3", "--dist", "loadfile"]


def main(argv: list[str]) -> int:
    """Run one project command."""
    if sys.version_info < MIN_PYTHON:
        sys.exit(f"eventbus needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+, this is {sys.version}")
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    known = {"demo", "test", "lint", "bench", "wheels", "eventbus", "uv"}
    if command not in known:
        print(f"unknown command {command!r}; commands: {', '.join(sorted(known))}")
        return 2
    uv, env = _uv(), uv_environment(os.environ)
    if command == "uv":
        return _run([*uv, *rest], env)
    if command == "wheels":
        # Only the build backend comes from the index; the wheels name each other by version,
        # so `pip install --find-links dist "eventbus-core[redis]"` finds all it needs there.
        # `--out-dir DIR` (or `-o DIR`) given: uv takes it once, so dist/ is only the default.
        out = (
            []
            if {"--out-dir", "-o"} & set(rest) or any(a.startswith("--out-dir=") for a in rest)
            else ["--out-dir", "dist"]
        )
        return _run([*uv, "build", "--all-packages", "--wheel", *out, *rest], env)
    _sync(uv, env)
    if command == "demo":
        return _run([_tool("eventbus"), "demo", *rest], env)
    if command == "test":
        return _run([_tool("pytest"), *test_workers(rest), *rest], env)
    if command == "lint":
        checks = [
            [_tool("ruff"), "check", "."],
            [_tool("ruff"), "format", "--check", "."],
            [_tool("mypy")],
        ]
        results = [_run(cmd, env) for cmd in checks]
        # The benchmark scripts too (they import each other from their folder).
        results.append(_run([_tool("mypy"), "benchmarks"], {**env, "MYPYPATH": "benchmarks"}))
        return max(results)
    if command == "bench":
        scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
        return max((_run([_tool("python"), str(s), *rest], env) for s in scripts), default=0)
    return _run([_tool("eventbus"), *rest], env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
