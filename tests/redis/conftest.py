"""Fixtures for the Redis backend tests: fakeredis clients, and real servers when one answers.

Real-server tests (marked `redis`) use the server of `tests/_services.py` (127.0.0.1:6379/3, or
EVENTBUS_TEST_REDIS_URL), and a unique key prefix per test, deleted afterwards; without a server
they skip, and fail under CI. Tests that stop a server start their own throwaway `redis-server`
instead (see `_servers.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from tests._services import close_client, require_redis
from tests.redis._servers import ThrowawayRedis


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
    client = require_redis()
    yield client
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    close_client(client)


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
