"""Fixtures for the Redis backend tests: fakeredis clients, and real servers when one answers.

Real-server tests (marked `redis`) use 127.0.0.1:6379 (or EVENTBUS_TEST_REDIS_URL), databases 1
to 5 only, and a unique key prefix per test, deleted afterwards. Tests that stop a server start
their own throwaway `redis-server` instead (see `_servers.py`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from tests.redis._servers import ThrowawayRedis

REDIS_URL = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/3")


def real_client(url: str = REDIS_URL) -> redis.Redis:
    """A client of the shared test server, or skip the test if none answers."""
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        pytest.skip(f"no Redis server answers at {url} ({type(exc).__name__}); CI starts one")
    return client


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test."""
    return f"eventbus-test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fake() -> Iterator[redis.Redis]:
    """A fresh fakeredis server and client (fakeredis runs Lua scripts only with lupa)."""
    pytest.importorskip("lupa", reason="fakeredis needs lupa (fakeredis[lua]) to run Lua scripts")
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    yield client
    client.close()


@pytest.fixture
def real(prefix: str) -> Iterator[redis.Redis]:
    """A client of the real test server; keys under this test's prefix are deleted after."""
    client = real_client()
    yield client
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.redis)])
def client(request: pytest.FixtureRequest, prefix: str) -> redis.Redis:
    """Each test using this runs on fakeredis and on the real server."""
    result: redis.Redis = request.getfixturevalue(request.param)
    return result


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    """A private redis-server on a free port, killed after the test."""
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.kill()
