"""The demo's processes get the settings this process settled on, in one spelling only."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventbus_core.cli import main
from tests._services import redis_url


def test_an_override_replaces_every_spelling_of_its_name() -> None:
    from eventbus_core._demo._shared import with_overrides

    base = {"redis_url": "redis://a/0", "Redis_Url": "redis://b/0", "PATH": "/bin"}
    assert with_overrides(base, {"REDIS_URL": "redis://c/0"}) == {
        "PATH": "/bin",
        "REDIS_URL": "redis://c/0",
    }


@pytest.mark.redis
def test_a_lower_case_setting_is_not_reported_as_set_twice_by_the_demos_processes(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # `redis_url` alone was warned about once by the demo, then by each of its processes as
    # "both REDIS_URL and redis_url are set": the demo had added REDIS_URL beside it.
    for name in ("REDIS_URL", "REDIS_ADDR", "REDIS_DB", "LLM_PROXY_EVENT_BUS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("redis_url", redis_url())
    argv = ["demo", "--backend", "redis", "--requests", "10", "--output", str(tmp_path / "o")]
    assert main(argv) == 0
    err = capfd.readouterr().err + caplog.text  # the processes' lines, and this one's log
    assert "redis_url is read as REDIS_URL" in err  # the demo's own warning, once
    assert "both REDIS_URL and redis_url are set" not in err


def _kept_demo_says(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    env: dict[str, str],
) -> str:
    """What a `demo --keep` run of `argv` (with only `env` of the backend's settings set)
    printed; the keys it kept are deleted."""
    import re

    import redis

    for name in ("REDIS_URL", "REDIS_ADDR", "REDIS_DB", "LLM_PROXY_EVENT_BUS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*argv, "--requests", "5", "--keep", "--output", str(tmp_path / "o")]) == 0
    out = capfd.readouterr().out
    found = re.search(r"EVENTBUS_REDIS_(?:KEY|STREAM)=(eventbus-demo:[0-9a-f]+):events", out)
    assert found is not None, out
    client = redis.Redis.from_url(redis_url())
    keys = list(client.scan_iter(match=f"{found.group(1)}:*"))
    if keys:
        client.delete(*keys)
    client.close()
    return out


@pytest.mark.redis
def test_the_keep_hint_names_the_backend_that_the_flag_chose(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Its `EVENTBUS_REDIS_STREAM=... eventbus stats` looked at the default memory backend and
    # exited 2 when --backend had chosen the run's (trial 126).
    argv = ["demo", "--backend", "redis-streams"]
    out = _kept_demo_says(monkeypatch, capfd, tmp_path, argv, {"REDIS_URL": redis_url()})
    assert "(with LLM_PROXY_EVENT_BUS=redis-streams, or --backend redis-streams)" in out


@pytest.mark.redis
def test_the_keep_hint_names_the_redis_url_that_the_flag_gave(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Its `eventbus stats` looked at the environment's Redis (or the default one), not the one
    # --redis-url gave the demo (trial 229).
    argv = ["demo", "--redis-url", redis_url()]
    out = _kept_demo_says(monkeypatch, capfd, tmp_path, argv, {"LLM_PROXY_EVENT_BUS": "redis"})
    assert f"eventbus stats shows it (with REDIS_URL={redis_url()})" in out


@pytest.mark.redis
def test_the_demos_processes_say_a_plugins_load_failure_once(tmp_path: Path) -> None:
    # Each process printed warnings' raw PluginLoadWarning text, then its log line: every
    # failure twice per process (trial 231).
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    info = site / "eventbus_brokenplugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: eventbus-brokenplugin\n")
    (info / "entry_points.txt").write_text("[eventbus]\nbroken = no_such_module_xyz:plugin\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "REDIS_URL": redis_url(),
        "LLM_PROXY_EVENT_BUS": "redis",
    }
    command = [sys.executable, "-m", "eventbus_core.cli", "demo", "--requests", "5"]
    done = subprocess.run(
        [*command, "--output", str(tmp_path / "o")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Once by the demo, once by each of its three processes (two publishers, a dispatcher).
    assert done.stderr.count("failed to load") == 4, done.stderr
    assert "PluginLoadWarning" not in done.stderr, done.stderr
