"""`publish()` of the built-in Redis buses gives its buffer's verdict, as the memory bus's does:
True for an accepted event, False for one counted as dropped (they returned None, trial 235)."""

from __future__ import annotations

import pytest
import redis

from eventbus_core import Event, EventBus
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
        assert bus.publish(make_event(1)) is True
        bus.stop(5)
        assert bus.publish(make_event(2)) is False
        stats = bus.stats()
        assert (stats.published, stats.dropped) == (1, 1)
    finally:
        bus.stop(1)


def test_a_subclass_that_overrides_publish_keeps_it_and_super_says_the_same(
    real: redis.Redis, prefix: str
) -> None:
    # The instance's bound fast path must not hide a subclass's publish(); the class's own
    # publish() said None where the instance's said True (review 237).
    seen: list[str] = []

    class Counting(RedisEventBus):
        def publish(self, event: Event) -> bool:
            seen.append(event.request_id)
            return super().publish(event)

    bus = Counting(real, key=f"{prefix}:sub")
    try:
        assert bus.publish(make_event(1)) is True
        assert seen == [make_event(1).request_id]
        memory = InMemoryEventBus()
        assert InMemoryEventBus.publish(memory, make_event(2)) is True
        memory.stop(5)
    finally:
        bus.stop(5)
