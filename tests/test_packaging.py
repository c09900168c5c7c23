"""The three distributions install on their own with pip-style installs into clean venvs.

These tests build real wheels from the distribution folders and install them with uv into
throw-away virtual environments, then check entry points, extras and `create_bus()` there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "eventbus-example-noop"

pytestmark = pytest.mark.slow


def _uv() -> list[str]:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        pytest.fail("uv is missing from the dev environment (it is in the dev dependency group)")
    return [found]


def _venv(tmp_path: Path, *packages: Path) -> Path:
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [*_uv(), "venv", "-q", "--python", sys.executable, str(venv)],
        check=True,
        env=env,
        timeout=120,
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [*_uv(), "pip", "install", "-q", "--python", str(python), *(str(p) for p in packages)],
        check=True,
        env=env,
        timeout=300,
    )
    return python


def _run(python: Path, code: str, **env: str) -> str:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTBUS_", "LLM_PROXY_", "OBSERVABILITY_", "REDIS_URL"))
    }
    done = subprocess.run(
        [str(python), "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        cwd=python.parent,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _plugins(python: Path) -> dict[str, dict[str, object]]:
    """`eventbus plugins --json` of the venv of `python`, by plugin name."""
    listed = subprocess.run(
        [str(python.with_name("eventbus")), "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}


def test_all_three_install_and_register_entry_points(tmp_path: Path) -> None:
    python = _venv(
        tmp_path, ROOT / "eventbus_core", ROOT / "eventbus_memory", ROOT / "eventbus_redis", EXAMPLE
    )
    out = _run(
        python,
        """
import importlib.metadata as md, json
from eventbus_core import create_bus
from eventbus_core.testing import make_event
names = sorted(ep.name for ep in md.entry_points(group="eventbus"))
bus = create_bus()
sub = bus.subscribe()
bus.publish(make_event(1))
got = sub.get(timeout=10).request_id
bus.stop()
extras = md.metadata("eventbus-core").get_all("Provides-Extra")
print(json.dumps({"names": names, "bus": type(bus).__name__, "got": got, "extras": extras}))
""",
    )
    result = json.loads(out)
    assert {"memory", "redis", "noop"} <= set(result["names"])
    assert result["bus"] == "InMemoryEventBus"
    assert result["got"] == "req-1"
    assert {"memory", "redis", "all"} <= set(result["extras"])

    # The third-party plugin is found by `eventbus plugins` and selected by configuration.
    plugins = _plugins(python)
    assert plugins["noop"]["distribution"] == "eventbus-example-noop"
    assert plugins["noop"]["version"] == "0.1.0"
    assert plugins["noop"]["backends"] == ["noop"]
    out = _run(
        python,
        "from eventbus_core import create_bus; print(type(create_bus()).__name__)",
        LLM_PROXY_EVENT_BUS="noop",
    )
    assert out.strip() == "NoopEventBus"


def test_core_alone_explains_how_to_get_a_backend(tmp_path: Path) -> None:
    python = _venv(tmp_path, ROOT / "eventbus_core")
    out = _run(
        python,
        """
from eventbus_core import create_bus, UnknownBackendError
try:
    create_bus()
except UnknownBackendError as exc:
    print(exc)
""",
    )
    assert "unknown eventbus backend 'memory' (the default, LLM_PROXY_EVENT_BUS being unset)" in out
    # Installed from the checkout: the hint names the sibling folder, not the index extra
    # (which cannot work before a release), and it is a command that works.
    hint = f"pip install {ROOT / 'eventbus_memory'} (from the checkout at {ROOT})"
    assert f"it comes with eventbus-memory; install it with: {hint}" in out
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(  # the same install, by uv: this environment has no pip
        [*_uv(), "pip", "install", "-q", "--python", str(python), str(ROOT / "eventbus_memory")],
        check=True,
        env=env,
        timeout=300,
    )
    out = _run(python, "from eventbus_core import create_bus; print(type(create_bus()).__name__)")
    assert out.strip() == "InMemoryEventBus"


def test_core_alone_runs_without_the_exporters_and_names_their_extras(tmp_path: Path) -> None:
    python = _venv(tmp_path, ROOT / "eventbus_core")
    out = _run(
        python,
        """
import sys
import eventbus_core, eventbus_core.metrics, eventbus_core.sinks
from eventbus_core import EventBusSettings, get_registry
assert {"otlp", "helicone", "lunary"} <= set(get_registry().sinks), get_registry().sinks
from eventbus_core.sinks import otlp
from eventbus_core.metrics import register_prometheus
for call in (lambda: otlp.build_sink(EventBusSettings(), {}), lambda: register_prometheus(None)):
    try:
        call()
    except ImportError as exc:
        print(exc)
assert not [m for m in sys.modules if m.startswith(("prometheus_client", "opentelemetry"))]
""",
    )
    assert 'pip install "eventbus-core[otlp]"' in out
    assert 'pip install "./eventbus_core[otlp]"' in out
    assert 'pip install "eventbus-core[prometheus]"' in out
    # `eventbus dispatch --metrics-port` without the extra: see test_metrics_endpoint.py.
    # `eventbus plugins` says so before a dispatcher does (it showed `otlp` as ok, trial 189),
    # without calling it a problem: the exit status stays 0 on a plain install.
    listed = subprocess.run(
        [str(python.with_name("eventbus")), "plugins"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    needs = (
        'needs opentelemetry-proto to build: pip install "eventbus-core[otlp]" (or, in a '
        'checkout of the eventbus repository, pip install "./eventbus_core[otlp]")'
    )
    assert rows["otlp"].endswith(f"  {needs}"), rows["otlp"]
    assert " ok" not in rows["otlp"], rows["otlp"]
    assert rows["jsonl"].endswith(" ok"), rows["jsonl"]
    plugins = _plugins(python)
    assert plugins["otlp"]["extras"] == ["otlp"]
    assert plugins["otlp"]["module"] == "eventbus_core.sinks.otlp"
    assert plugins["otlp"]["needs"] == [needs]  # the commands the dispatcher's error gives
    assert plugins["jsonl"]["needs"] == []
