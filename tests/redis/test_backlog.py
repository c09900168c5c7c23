"""The `Backlog` capability of a Redis streams consumer (read by the metrics at scrape time),
and the `group_joined` figure readiness watches."""

from __future__ import annotations

import logging
from typing import Any

import pytest
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
        got = read_all(consumer, 2)
        assert consumer.backlog()["lag"] <= 5  # catching up: Redis said 28
        got += read_all(consumer, 3)
        assert [d.event.log_id for d in got] == [27, 28, 29, 30, 31]
        assert consumer.backlog()["lag"] == 0  # Redis said 25
        assert bus.stream_info()["lag"] == 0
        (group,) = bus.describe()["groups"]
        assert group["lag"] == 0


def test_pending_entries_trimmed_before_processing_are_counted_missed_and_said(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The warning read "5 pending entries were of <stream> trimmed" (trial 104).
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        for i in range(5):
            bus.publish(make_event(i))
        assert bus.flush(10)
        read_all(bus.consumer(name="c1", batch_size=10, claim_idle=60), 5)  # pending, then gone
        client.xtrim(stream, maxlen=0, approximate=False)
        again = bus.consumer(name="c1", batch_size=10, claim_idle=60)  # as after a restart
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            assert again.read(10, timeout=0.2) == []
        assert again.figures()["missed"] == 5
    said = [r.getMessage() for r in caplog.records if "trimmed (MAXLEN)" in r.getMessage()]
    assert said == [
        f"eventbus redis: 5 pending entries of {stream} were trimmed (MAXLEN) before processing"
    ]


def _drain(consumers: list[Any], rounds: int = 100) -> int:
    """Read and acknowledge with each consumer in turn until a whole round brings nothing."""
    got = 0
    for _ in range(rounds):
        brought = 0
        for consumer in consumers:
            deliveries = consumer.read(50, timeout=0.02)
            consumer.ack([d.token for d in deliveries])
            brought += len(deliveries)
        got += brought
        if not brought:
            break
    return got


def test_entries_trimmed_before_the_group_read_them_are_counted_once_in_missed(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A group that fell behind MAXLEN lost what was trimmed unread with every figure at 0, and
    # `eventbus dispatch` exited 0 (trial 164: 1,154 of 2,000 read, "missed": 0). Counted now,
    # once for the group, whichever of its consumers reads next, and said.
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g", max_len=100) as bus:
        consumers = [bus.consumer(name=n, batch_size=50, claim_idle=60) for n in ("a", "b")]
        assert consumers[0].read(10, timeout=0) == []  # the group exists before the events
        got = 0
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            for burst in range(3):
                for i in range(700):
                    bus.publish(make_event(i))
                assert bus.flush(10)
                got += _drain(consumers if burst != 1 else consumers[:1], rounds=2)
            got += _drain(consumers)
        missed = sum(c.figures()["missed"] for c in consumers)
        assert got + missed == 2100 and missed > 1000, (got, missed)
        assert all(c.figures()["trimmed_unread"] == c.figures()["missed"] for c in consumers)
        assert bus.stream_info()["lag"] == 0
        for consumer in consumers:
            consumer.close()
    said = [r.getMessage() for r in caplog.records if "before consumer group" in r.getMessage()]
    assert said and all("EVENTBUS_REDIS_STREAM_MAX_LEN" in line for line in said)


def test_entries_trimmed_before_a_group_existed_are_not_its_losses(
    client: redis.Redis, prefix: str
) -> None:
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g", max_len=100) as bus:
        for i in range(500):
            bus.publish(make_event(i))
        assert bus.flush(10)
        length = client.xlen(stream)
        consumer = bus.consumer(name="late", batch_size=50, claim_idle=60)
        assert _drain([consumer]) == length
        assert consumer.figures()["missed"] == 0
        consumer.close()
