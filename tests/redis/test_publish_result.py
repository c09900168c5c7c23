"""`publish()` of the built-in Redis buses gives its buffer's verdict, as the memory bus's does:
True for an accepted event, False for one counted as dropped (they returned None, trial 235)."""

from __future__ import annotations

import pytest
import redis

from eventbus_core import EventBus
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus
from eventbus_redis import RedisEventBus, RedisStreamsEventBus

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("kind", ["memory", "redis", "redis-streams"])
def test_publish_says_whether_it_accepted_the_event(
    kind: str, real: redis.Redis, prefix: str
) -> None:
    bus: EventBus
    if kind == "memory":
        bus = InMemoryEventBus()
    elif kind == "redis":
        bus = RedisEventBus(real, key=f"{prefix}:l")
    else:
        bus = RedisStreamsEventBus(real, stream=f"{prefix}:s")
    try:
        assert bus.publish(make_event(1)) is True  # type: ignore[func-returns-value]
        bus.stop(5)
        assert bus.publish(make_event(2)) is False  # type: ignore[func-returns-value]
        stats = bus.stats()
        assert (stats.published, stats.dropped) == (1, 1)
    finally:
        bus.stop(1)
