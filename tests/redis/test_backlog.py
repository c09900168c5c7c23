"""The `Backlog` capability of a Redis streams consumer (read by the metrics at scrape time),
and the `group_joined` figure readiness watches."""

from __future__ import annotations

import redis

from eventbus_core.capabilities import Backlog
from eventbus_core.testing import make_event
from eventbus_redis import RedisStreamsEventBus
from tests.redis.test_streams import read_all


def test_backlog_reports_the_groups_lag_and_pending(client: redis.Redis, prefix: str) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c1", batch_size=4, claim_idle=60)
        assert isinstance(consumer, Backlog)
        assert consumer.figures()["group_joined"] is False  # not read yet
        assert consumer.backlog() == {"lag": None, "pending": 0}  # no stream, no group yet
        for i in range(10):
            bus.publish(make_event(i))
        assert bus.flush(10)
        got = read_all(consumer, 4)
        assert consumer.figures()["group_joined"] is True
        assert consumer.backlog() == {"lag": 6, "pending": 4}
        consumer.ack([d.token for d in got])
        assert consumer.backlog() == {"lag": 6, "pending": 0}
        read_all(consumer, 6)
        assert consumer.backlog()["lag"] == 0


def test_lag_counts_what_is_left_after_the_stream_was_trimmed_past_the_group(
    client: redis.Redis, prefix: str
) -> None:
    # Redis counts entries trimmed before the group was handed them as lag for ever: a
    # dispatcher that had read everything left showed a lag of 278 (trial 102).
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c1", batch_size=50, claim_idle=60)
        bus.publish(make_event(0))
        assert bus.flush(10)
        read_all(consumer, 1)
        for i in range(1, 31):
            bus.publish(make_event(i))
        assert bus.flush(10)
        client.xtrim(stream, maxlen=5, approximate=False)  # 25 gone before the group got them
        assert consumer.backlog()["lag"] == 5  # behind the trim: the 5 the stream holds
        got = read_all(consumer, 5)
        assert [d.event.log_id for d in got] == [27, 28, 29, 30, 31]
        assert consumer.backlog()["lag"] == 0  # Redis said 25
        assert bus.stream_info()["lag"] == 0
        (group,) = bus.describe()["groups"]
        assert group["lag"] == 0
