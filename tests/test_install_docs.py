"""The documented install commands work in a fresh virtual environment, as a user types them.

One `python -m venv` environment (pip, not uv: what a user has), shared by the tests of this
module to keep the cost down, in this order:

1. the checkout line of README.md, read from the README itself and run as written from the
   repository root; then the Redis backend used through it (real Redis), and the runtime
   install hint, which must name the checkout's folder there;
2. the example plugins, each by the command of its own README;
3. `python3 dev.py wheels`-style wheels in a dist/ folder, installed by the documented
   `pip install --find-links dist "eventbus-core[memory,redis]"` after removing the
   checkout install.

pip may use the machine's cache and PyPI for the dependencies (pydantic, redis, hatchling).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._services import redis_url, require_redis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
REDIS_URL = redis_url()

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def documented_line(path: Path, start: str) -> str:
    """The one command line of `path` that starts with `start` (in a code block or table)."""
    found = {
        line.strip().strip("`").strip()
        for line in path.read_text().splitlines()
        if line.strip().startswith(start)
    }
    assert len(found) == 1, f"{path}: expected one `{start}...` line, found {sorted(found)}"
    return found.pop()


def checkout_line() -> str:
    return documented_line(ROOT / "README.md", "pip install ./eventbus_core")


class Venv:
    """A virtual environment a command line runs in as if it were activated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EVENTBUS_", "LLM_PROXY_", "OBSERVABILITY_", "REDIS_URL"))
            and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        }
        path = f"{self.bin}{os.pathsep}{clean.get('PATH', '')}"
        return {**clean, "VIRTUAL_ENV": str(self.path), "PATH": path, **extra}

    def shell(self, line: str, cwd: Path = ROOT, **env: str) -> str:
        """Run `line` with sh, as typed at a prompt; return stdout (fail with the output)."""
        done = subprocess.run(
            ["sh", "-c", line],
            cwd=cwd,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"`{line}` failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def python(self, code: str, cwd: Path = ROOT, **env: str) -> str:
        return self.shell(f"python -c {shlex.quote(code)}", cwd=cwd, **env)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    path = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    env = Venv(path)
    assert not (env.bin / "eventbus").exists()
    env.shell(checkout_line())  # exactly as README.md says, from the repository root
    return env


@pytest.fixture
def redis_key() -> Iterator[str]:
    client = require_redis()  # skips without a server, fails under CI
    key = f"eventbus-install-test:{uuid.uuid4().hex[:10]}"
    yield key
    keys = list(client.scan_iter(match=f"{key}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_the_quickstart_gives_the_same_line() -> None:
    assert documented_line(ROOT / "docs" / "quickstart.md", "pip install ./eventbus_core") == (
        checkout_line()
    )


@pytest.mark.redis
def test_the_readme_line_installs_and_the_redis_backend_works(venv: Venv, redis_key: str) -> None:
    versions = venv.shell("eventbus --version")
    assert {line.split()[0] for line in versions.splitlines()} >= {
        "eventbus-core",
        "eventbus-memory",
        "eventbus-redis",
    }
    env = {"LLM_PROXY_EVENT_BUS": "redis", "REDIS_URL": REDIS_URL, "EVENTBUS_REDIS_KEY": redis_key}
    out = venv.python(
        """
from datetime import timedelta
from eventbus_core import Event, create_bus
bus = create_bus()
sub = bus.subscribe()
bus.publish(Event(request_id="req-123", method="POST", path="/v1/chat/completions",
                  status=200, duration=timedelta(milliseconds=150)))
got = sub.get(timeout=10)
bus.stop()
print(type(bus).__name__, got.request_id, got.log_id, bus.stats().published)
""",
        cwd=venv.path,  # not the checkout: only the installed distributions are importable
        **env,
    )
    assert out.split() == ["RedisEventBus", "req-123", "1", "1"]
    stats = json.loads(venv.shell("eventbus stats --json", cwd=venv.path, **env))
    assert stats["published"] == 1 and stats["length"] == 1


def test_the_install_hint_names_the_checkout_folder(venv: Venv) -> None:
    code = (
        "from eventbus_core._install import SIBLINGS, install_command;"
        "print(install_command(SIBLINGS['redis']))"
    )
    assert venv.python(code).strip() == "pip install ./eventbus_redis"  # from the root
    elsewhere = venv.python(code, cwd=venv.path).strip()
    assert elsewhere == f"pip install {ROOT / 'eventbus_redis'} (from the checkout at {ROOT})"
    # ... and it is a command that works where it was given.
    venv.shell(elsewhere.split(" (from")[0], cwd=venv.path)


@pytest.mark.parametrize(
    ("example", "check"),
    [
        (
            "eventbus-example-noop",
            "from eventbus_core import create_bus; print(type(create_bus()).__name__)",
        ),
        (
            "eventbus-sink-example",
            "from eventbus_core.dispatch._setup import build_sinks;"
            "from eventbus_core import EventBusSettings;"
            "sink, = build_sinks(EventBusSettings(), [('sqlite', {'path': 'e.db'})]);"
            "print(type(sink).__name__)",
        ),
    ],
)
def test_the_example_plugins_install_by_their_documented_command(
    venv: Venv, example: str, check: str, tmp_path: Path
) -> None:
    line = documented_line(EXAMPLES / example / "README.md", "pip install ./eventbus_core")
    assert f"./docs/examples/{example}" in line
    venv.shell(line)
    listed = json.loads(venv.shell("eventbus plugins --json", cwd=tmp_path))
    by_dist = {p["distribution"]: p for p in listed["plugins"]}
    assert example in by_dist and by_dist[example]["error"] is None
    env = {"LLM_PROXY_EVENT_BUS": "noop"} if example.endswith("noop") else {}
    assert venv.python(check, cwd=tmp_path, **env).strip() in ("NoopEventBus", "SqliteSink")


def test_wheels_in_dist_install_with_find_links(venv: Venv, tmp_path: Path) -> None:
    assert "python3 dev.py wheels" in (ROOT / "README.md").read_text()
    line = documented_line(ROOT / "README.md", "| wheels built from it")
    command = line.split("then `", 1)[1].split("`", 1)[0]
    assert command == 'pip install --find-links dist "eventbus-core[memory,redis]"'
    # What `python3 dev.py wheels` runs, into a dist/ of our own.
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--all-packages", "--wheel", "--out-dir", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    venv.shell("pip uninstall -y eventbus-core eventbus-memory eventbus-redis")
    venv.shell(command, cwd=tmp_path)  # `dist` relative to where the user stands
    assert "eventbus-redis" in venv.shell("eventbus --version", cwd=tmp_path)
    # Installed from wheels: the hint names their folder, so that it works without an index.
    code = (
        "from eventbus_core._install import SIBLINGS, install_command;"
        "print(install_command(SIBLINGS['memory']))"
    )
    hint = venv.python(code, cwd=tmp_path).strip()
    venv.shell("pip uninstall -y eventbus-memory")  # as if only [redis] had been installed
    assert hint.startswith('pip install "eventbus-core[memory]" (add --find-links DIR')
    # What the user types, following the note:
    venv.shell(f'pip install --find-links {dist} "eventbus-core[memory]"', cwd=Path("/"))
    assert "eventbus-memory" in venv.shell("eventbus --version", cwd=tmp_path)
