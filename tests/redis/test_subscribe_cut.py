"""`subscribe()` starts after what the bus accepted before it, as the memory bus does.

Events published just before `subscribe()` may still be in the writer's buffer; written after
the subscription read its start position, they would be delivered to it.
"""

from __future__ import annotations

import pytest
import redis

from eventbus_core.testing import make_event
from eventbus_redis import RedisEventBus, RedisStreamsEventBus


@pytest.mark.parametrize("bus_class", [RedisEventBus, RedisStreamsEventBus])
def test_events_published_before_subscribe_are_not_delivered(
    client: redis.Redis, prefix: str, bus_class: type[RedisEventBus | RedisStreamsEventBus]
) -> None:
    with bus_class(client, f"{prefix}:cut") as bus:
        for round_ in range(3):  # the first round also covers a writer not yet connected
            for i in range(20):
                bus.publish(make_event(i, request_id=f"before-{round_}-{i}"))
            sub = bus.subscribe()
            for i in range(5):
                bus.publish(make_event(i, request_id=f"after-{round_}-{i}"))
            assert bus.flush(10)
            got = [e.request_id for e in sub.get_batch(100, timeout=5)]
            while len(got) < 5:
                batch = sub.get_batch(100, timeout=5)
                assert batch, f"round {round_}: got only {got}"
                got += [e.request_id for e in batch]
            assert got == [f"after-{round_}-{i}" for i in range(5)]
            sub.close()
