"""A `multiprocessing` child that publishes and returns without `stop()` delivers its events.

multiprocessing ends its fork and forkserver children with `os._exit()`, after its own
finalizers but without `atexit`, where every other process that ends normally waits for its
buses. Such a child lost its whole buffer, logged nothing, and exited 0.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest
import redis

from eventbus_core.testing import make_event
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests._python import run_python
from tests._services import redis_url
from tests.redis.test_fork import make_bus, stored

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

CHILD_EVENTS = 300
_inherited: RedisEventBus | RedisStreamsEventBus | None = None


def _publish_inherited() -> None:
    assert _inherited is not None
    for i in range(CHILD_EVENTS):
        _inherited.publish(make_event(i, request_id=f"child-{i}"))
    # returns at once: no flush(), no stop()


def _publish_own(url: str, key: str) -> None:
    """A forkserver child's target: a bus of its own, built and published to in the child."""
    bus = RedisEventBus.log(redis.Redis.from_url(url), key, 1000, 0, publish_path="thread")
    for i in range(CHILD_EVENTS):
        bus.publish(make_event(i, request_id=f"child-{i}"))


def _child_ids(client: redis.Redis, bus: RedisEventBus | RedisStreamsEventBus) -> list[str]:
    return sorted(e["RequestID"] for e in stored(client, bus) if e["RequestID"].startswith("c"))


@pytest.mark.parametrize("kind", ["log", "streams"])
def test_a_fork_child_returning_without_stop_delivers_what_it_published(
    real: redis.Redis, prefix: str, kind: str
) -> None:
    global _inherited
    bus = _inherited = make_bus(kind, real, prefix)
    bus.publish(make_event(0, request_id="parent-0"))
    assert bus.flush(10)
    try:
        child = multiprocessing.get_context("fork").Process(target=_publish_inherited)
        child.start()
        child.join(60)
        assert child.exitcode == 0
    finally:
        _inherited = None
    bus.stop(10)
    assert _child_ids(real, bus) == sorted(f"child-{i}" for i in range(CHILD_EVENTS))


_FORKSERVER_PARENT = """
import multiprocessing, sys
from tests.redis.test_multiprocessing_exit import _publish_own

if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    child = context.Process(target=_publish_own, args=sys.argv[1:])
    child.start()
    child.join(60)
    sys.exit(child.exitcode)
"""


def test_a_forkserver_child_returning_without_stop_delivers_what_it_published(
    real: redis.Redis, prefix: str
) -> None:
    # From a parent of its own, run from the checkout's root: the forkserver imports the
    # target's module by name (a pytest-xdist worker's path has no `tests` package).
    key = f"{prefix}:log"
    done = run_python(_FORKSERVER_PARENT, redis_url(), key, timeout=120)
    assert done.returncode == 0, done.stderr
    assert real.llen(key) == CHILD_EVENTS


_PARENT_WITH_MULTIPROCESSING = """
import multiprocessing.util
import redis
from eventbus_core.testing import make_event
from eventbus_redis import RedisEventBus

bus = RedisEventBus.log(redis.Redis.from_url("redis://127.0.0.1:1/0"), "k", 0, 0)
for i in range(10):
    bus.publish(make_event(i))
"""


def test_a_process_with_multiprocessing_loaded_waits_at_exit_once() -> None:
    # Its finalizer and atexit both ran the exit's wait: the loss was reported twice, and a
    # slow backend held the exit up to twice the bound (review).
    done = run_python(_PARENT_WITH_MULTIPROCESSING)
    assert done.stderr.count("not delivered yet") == 1, done.stderr
