"""The outside services tests use, found in one place: a real Redis, its binary, the Go toolchain.

Every test that needs one asks here. A missing service skips the test on a developer's machine,
and **fails** it under CI (the `CI` variable set, and not "0", "false" or "no"), with a message
saying what to start: a CI run must never turn green by skipping what it exists to check.

Redis: `EVENTBUS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/3`) names the shared test
server. A test that needs a database of its own calls `redis_url(db=N)`: the same server,
credentials and options, database N. Nothing else in tests/ spells a Redis address.

A later backend's server goes beside these, the same way (for NATS: `nats_url()` from
`EVENTBUS_TEST_NATS_URL`, and `require_nats()`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis

from eventbus_core import redact_url

__all__ = [
    "DEFAULT_REDIS_URL",
    "REDIS_URL_VAR",
    "in_ci",
    "missing",
    "redis_url",
    "require_go",
    "require_redis",
    "require_redis_server",
]

REDIS_URL_VAR = "EVENTBUS_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/3"

_NOT_CI = frozenset({"", "0", "false", "no", "off"})


def in_ci() -> bool:
    """True when the `CI` environment variable is set to something meaning yes."""
    return os.environ.get("CI", "").strip().lower() not in _NOT_CI


def missing(what: str, start: str) -> NoReturn:
    """Skip the test because `what` is missing, or fail it under CI; `start` says how to
    provide it."""
    if in_ci():
        pytest.fail(f"{what}, and CI is set, so this fails instead of skipping: {start}", False)
    pytest.skip(f"{what}: {start} (CI fails here instead of skipping)")


def redis_url(db: int | None = None) -> str:
    """The shared test server's URL (`EVENTBUS_TEST_REDIS_URL`), with database `db` if given."""
    url = os.environ.get(REDIS_URL_VAR) or DEFAULT_REDIS_URL
    if db is None:
        return url
    parts = urlsplit(url)
    if parts.scheme == "unix":  # unix:///path/redis.sock?db=3
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"  # keeps the "//"
    return urlunsplit(parts._replace(path=f"/{db}"))


def require_redis(db: int | None = None, **options: Any) -> redis.Redis:
    """A client of the shared test server (database `db` if given), which answered PING.

    Skips the test when no server answers (fails it under CI). `options` go to the client.
    """
    url = redis_url(db)
    options.setdefault("socket_connect_timeout", 2)
    options.setdefault("socket_timeout", 10)
    client = redis.Redis.from_url(url, **options)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        error = type(exc).__name__
    else:
        return client
    close_client(client)
    missing(
        f"no Redis server answers at {redact_url(url)} ({error})",
        f"start one (redis-server --port 6379 --save '', as .ci/run does) or point {REDIS_URL_VAR} "
        "at one",
    )


def close_client(client: redis.Redis) -> None:
    """Close `client` and every socket of its pool.

    redis-py before 5.0.1 closes no socket in `Redis.close()`: they wait for the garbage
    collector, and a connection kept in a reference cycle by a caught error (redis-py's retry
    re-raises from a frame that holds it) may have its socket finalised first, which warns
    "unclosed socket" at some later test, or at the end of the run.
    """
    client.close()
    client.connection_pool.disconnect()


def require_redis_server() -> str:
    """The `redis-server` binary, for tests that start throwaway servers of their own."""
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        missing("redis-server is not installed", "apt-get install redis-server (.ci/run does)")
    return found


def require_go() -> str:
    """The `go` command, for the tests that check the wire format with Go's encoding/json."""
    found = shutil.which("go")
    if found is None:
        missing("the Go toolchain is not installed", "apt-get install golang-go (.ci/run does)")
    return found
