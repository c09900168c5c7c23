"""The third-party sink example (docs/examples/eventbus-sink-example), found by entry point.

The example is "installed" the way an installer leaves a distribution: its source on the path
and a `.dist-info` holding the entry points declared in its own pyproject.toml. Discovery then
goes through `importlib.metadata` exactly as for a pip-installed plugin.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus_core import Dispatcher, Event, EventBusSettings, PluginRegistry, create_bus

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "eventbus-sink-example"


@pytest.fixture
def installed_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    info = site / f"eventbus_sink_example-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = project["entry-points"]["eventbus"]
    (info / "entry_points.txt").write_text(
        "[eventbus]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )
    paths = [str(site), str(EXAMPLE / "src")]
    for p in reversed(paths):
        monkeypatch.syspath_prepend(p)
    yield paths
    for name in [m for m in sys.modules if m.startswith("eventbus_sink_example")]:
        del sys.modules[name]


def test_the_example_is_discovered_as_an_installed_plugin(installed_example: list[str]) -> None:
    registry = PluginRegistry()
    assert registry.sinks["sqlite"].plugin == "sqlite"
    info = registry.plugins["sqlite"]
    assert (info.distribution, info.version, info.sinks) == (
        "eventbus-sink-example",
        "0.1.0",
        ["sqlite"],
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(installed_example)}
    done = subprocess.run(
        [sys.executable, "-m", "eventbus_core.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert "sqlite" in json.loads(done.stdout)["sinks"]


async def test_the_example_sink_stores_and_deduplicates_by_log_id(
    installed_example: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "events.db"
    monkeypatch.setenv("EVENTBUS_SINK_SQLITE_PATH", str(db))
    settings = EventBusSettings(sinks="sqlite", flush_interval=0.01)
    bus = create_bus(settings)
    dispatcher = Dispatcher.from_settings(settings, bus=bus, registry=PluginRegistry())
    task = asyncio.create_task(dispatcher.run())
    events = [
        Event(request_id=f"r{i}", method="POST", path="/v1/chat/completions", status=200, log_id=i)
        for i in range(1, 21)
    ]
    # LogIDs from 1 again, as from a Redis that lost its data: new events, not repeats
    # (helper-90: the example kept none of them, by log_id alone).
    after_loss = [Event(request_id=f"n{i}", status=200, log_id=i) for i in (1, 2)]
    for e in [*events, *events[:5], *after_loss]:  # five redelivered, as after a crash
        bus.publish(e)
    await bus.astop()
    stats = await task
    assert stats.sinks["sqlite"].sent == 27
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT log_id, request_id FROM events ORDER BY rowid").fetchall()
    conn.close()
    assert rows == [*((i, f"r{i}") for i in range(1, 21)), (1, "n1"), (2, "n2")]


def test_the_example_refuses_an_option_it_does_not_take(installed_example: list[str]) -> None:
    # --sink-opt pth=typo.db was ignored, and the sink wrote to events.db (trial 116).
    from eventbus_sink_example.plugin import build_sink

    from eventbus_core import SettingsError

    with pytest.raises(SettingsError, match=r"'pth'.*did you mean 'path'") as info:
        build_sink(EventBusSettings(), {"pth": "typo.db"})
    assert "EVENTBUS_SINK_SQLITE_PTH" in str(info.value)  # where it came from, either way
    assert build_sink(EventBusSettings(), {"path": "x.db", "table": "t"}).table == "t"
