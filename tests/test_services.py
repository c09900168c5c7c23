"""Under CI a missing Redis fails the run instead of skipping; all tests find Redis the same way.

The proof runs real tests of this repository in a child pytest, with `EVENTBUS_TEST_REDIS_URL`
pointing at a port nobody listens on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._services import in_ci, redis_url
from tests.redis._servers import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTEST = Path(sys.executable).with_name("pytest")

# The shared test server (conftest of tests/redis) and a database derived from it (CLI tests).
REDIS_TESTS = [
    "tests/redis/test_contract.py::TestRedisLogContract::test_publish_then_subscriber_receives[real]",
    "tests/core/test_cli_redis.py::test_stats_of_the_log",
]


def run_redis_tests(ci: str) -> tuple[int, str, str]:
    url = f"redis://127.0.0.1:{free_port()}/3"  # closed: nothing answers there
    env = {**os.environ, "CI": ci, "EVENTBUS_TEST_REDIS_URL": url}
    done = subprocess.run(
        [str(PYTEST), "-p", "no:cacheprovider", "-q", "--tb=short", *REDIS_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, url


def test_missing_redis_fails_under_ci() -> None:
    code, out, url = run_redis_tests("true")
    assert code == 1, out
    # pytest says "error" for a failure in a fixture, "failed" in the test: both turn CI red.
    assert re.search(r"\b2 (failed|errors)\b", out), out
    assert "skipped" not in out, out
    port_url = url.rsplit("/", 1)[0]
    assert f"no Redis server answers at {port_url}/3" in out  # the shared test database
    assert f"no Redis server answers at {port_url}/11" in out  # derived from the same URL
    assert "start one" in out and "EVENTBUS_TEST_REDIS_URL" in out


def test_missing_redis_skips_on_a_developer_machine() -> None:
    code, out, _ = run_redis_tests("")
    assert code == 0, out
    assert re.search(r"\b2 skipped\b", out), out
    assert "CI fails here instead of skipping" in out


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("", False), ("false", False), ("0", False)],
)
def test_ci_variable(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_other_databases_are_derived_from_the_one_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_TEST_REDIS_URL", "rediss://u:pw@cache.internal:6380/2?ssl=x")
    assert redis_url() == "rediss://u:pw@cache.internal:6380/2?ssl=x"
    assert redis_url(8) == "rediss://u:pw@cache.internal:6380/8?ssl=x"
    monkeypatch.setenv("EVENTBUS_TEST_REDIS_URL", "unix:///run/redis.sock?db=3&password=pw")
    assert redis_url(11) == "unix:///run/redis.sock?password=pw&db=11"
    monkeypatch.delenv("EVENTBUS_TEST_REDIS_URL")
    assert redis_url(7) == "redis://127.0.0.1:6379/7"
