"""`dev.py` leaves the user's environment alone.

- uv runs without the shell's VIRTUAL_ENV and always on this project's .venv, so an active
  virtual environment is neither changed nor warned about on every run;
- a missing uv is installed with pip into `.venv-tools/` beside dev.py, never into the
  interpreter or the virtual environment dev.py runs with.

The unit tests look at what dev.py would do; the slow ones run it for real: in a fresh,
activated virtual environment without uv (pip fetches uv from the cache or PyPI), and against
this checkout with a foreign VIRTUAL_ENV set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eventbus_dev_script", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dev = load_dev()


def test_uv_runs_without_the_shells_virtual_env_on_this_projects_venv(tmp_path: Path) -> None:
    shell = {
        "VIRTUAL_ENV": "/home/someone/.venvs/other",
        "UV_PROJECT_ENVIRONMENT": "/home/someone/.venvs/other",
        "PATH": "/home/someone/.venvs/other/bin:/usr/bin",
        "UV_PYTHON": "/opt/python3.12",
    }
    env = dev.uv_environment(shell, root=tmp_path)
    assert "VIRTUAL_ENV" not in env
    assert env["UV_PROJECT_ENVIRONMENT"] == str(tmp_path / ".venv")
    assert env["PATH"] == shell["PATH"]
    assert env["UV_PYTHON"] == "/opt/python3.12"  # the user's explicit choice is kept
    assert env["UV_PYTHON_DOWNLOADS"] == "never"
    assert shell["VIRTUAL_ENV"] == "/home/someone/.venvs/other"  # the caller's dict untouched


def test_uv_defaults_to_the_interpreter_running_dev_py(tmp_path: Path) -> None:
    env = dev.uv_environment({}, root=tmp_path)
    assert env["UV_PYTHON"] == sys.executable


def test_uv_is_installed_into_the_private_folder_only(tmp_path: Path) -> None:
    command = dev.uv_install_command(tmp_path / ".venv-tools", "/usr/bin/python3")
    assert command[:4] == ["/usr/bin/python3", "-m", "pip", "install"]
    assert command[command.index("--target") + 1] == str(tmp_path / ".venv-tools" / "uv")
    assert command[-1] == "uv"
    for global_flag in ("--user", "--break-system-packages", "--system", "--prefix"):
        assert global_flag not in command
    assert (
        dev.private_uv(tmp_path / ".venv-tools") == tmp_path / ".venv-tools" / "uv" / "bin" / "uv"
    )


def test_a_uv_on_path_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dev.shutil, "which", lambda name: "/usr/local/bin/uv")
    assert dev.find_uv(tmp_path) == ["/usr/local/bin/uv"]


def test_the_private_uv_is_found_before_installing_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dev.shutil, "which", lambda name: None)
    private = dev.private_uv(tmp_path)
    private.parent.mkdir(parents=True)
    private.write_text("#!/bin/sh\n")
    assert dev.find_uv(tmp_path, python="/nonexistent/python") == [str(private)]


def test_the_private_folder_is_ignored_by_git() -> None:
    assert ".venv-tools/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_in_an_active_venv_without_uv_it_bootstraps_privately(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "dev.py", checkout / "dev.py")
    foreign = tmp_path / "users-venv"
    subprocess.run([sys.executable, "-m", "venv", str(foreign)], check=True, timeout=300)
    path = os.pathsep.join([str(foreign / "bin"), "/usr/bin", "/bin"])
    if any(Path(d, "uv").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("a uv on the system PATH: nothing to bootstrap")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
        "VIRTUAL_ENV": str(foreign),  # as `source users-venv/bin/activate` leaves it
        "PATH": path,
    }

    def dev_uv_version() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["python3", str(checkout / "dev.py"), "uv", "--version"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    first = dev_uv_version()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installing it with pip into .venv-tools/" in first.stdout
    assert "uv " in first.stdout
    assert (checkout / ".venv-tools" / "uv" / "bin" / "uv").is_file()
    # The user's environment is as it was: no uv in it.
    assert not (foreign / "bin" / "uv").exists()
    probe = subprocess.run(
        [str(foreign / "bin" / "python"), "-m", "uv", "--version"],
        capture_output=True,
        check=False,
    )
    assert probe.returncode != 0
    second = dev_uv_version()
    assert second.returncode == 0
    assert "installing" not in second.stdout  # found in .venv-tools/ this time


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_active_foreign_venv_gets_no_warning_and_no_change(tmp_path: Path) -> None:
    foreign = tmp_path / "users-venv"
    foreign.mkdir()
    env = {**os.environ, "VIRTUAL_ENV": str(foreign)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "eventbus", "--version"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "does not match" not in done.stdout + done.stderr
    assert "eventbus-core" in done.stdout
    assert list(foreign.iterdir()) == []


def test_tests_run_in_three_processes_unless_the_caller_chose() -> None:
    dev = load_dev()
    assert dev.test_workers([]) == ["-n", "3", "--dist", "loadfile"]
    assert dev.test_workers(["tests/core", "-k", "x"]) == ["-n", "3", "--dist", "loadfile"]
    for chosen in (
        ["-n", "0"],
        ["-n0"],
        ["--numprocesses=4"],
        ["--dist", "load"],
        ["-p", "no:xdist"],
    ):
        assert dev.test_workers(chosen) == [], chosen


def test_sync_compiles_the_environment_and_every_workspace_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(dev, "_run", lambda cmd, env=None: ran.append(cmd) or 0)
    dev._sync(["uv"], {})
    sync, compileall = ran
    assert sync[:2] == ["uv", "sync"] and "--compile-bytecode" in sync
    assert compileall[1:4] == ["-m", "compileall", "-q"]
    members = sorted(p.parent.name for p in ROOT.glob("eventbus_*/pyproject.toml"))
    assert sorted(Path(s).parent.name for s in compileall[4:]) == members


def test_lint_type_checks_the_packages_and_the_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    # CONTRIBUTING: `dev.py lint` runs mypy --strict on the packages and on benchmarks/, and
    # fails when any check fails.
    ran: list[tuple[list[str], dict[str, str]]] = []
    failing = {"benchmarks"}

    def run(cmd: list[str], env: Any = None) -> int:
        ran.append((cmd, dict(env or {})))
        return 1 if cmd[-1] in failing else 0

    monkeypatch.setattr(dev, "_uv", lambda: ["uv"])
    monkeypatch.setattr(dev, "_sync", lambda uv, env: None)
    monkeypatch.setattr(dev, "_run", run)
    assert dev.main(["lint"]) == 1
    mypy = [(cmd, env) for cmd, env in ran if Path(cmd[0]).name == "mypy"]
    assert [cmd[1:] for cmd, _ in mypy] == [[], ["benchmarks"]]
    assert mypy[1][1]["MYPYPATH"] == "benchmarks"
    failing.clear()
    assert dev.main(["lint"]) == 0
