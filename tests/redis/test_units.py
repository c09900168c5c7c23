"""Unit tests of the Redis backends' helpers and of publish()'s promises, on fakeredis."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
import redis

from eventbus_core import EventBusSettings
from eventbus_core.testing import make_event
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from eventbus_redis._client import (
    Backoff,
    client_from_settings,
    describe_client,
    safe_error,
    ttl_seconds,
)


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=0.8)
    delays = [backoff.next() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8, 0.8, 0.8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next() <= 0.1
    with pytest.raises(ValueError, match="base"):
        Backoff(base=1, cap=0.5)


def test_ttl_accepts_timedelta_or_seconds() -> None:
    assert ttl_seconds(timedelta(hours=24)) == 86_400
    assert ttl_seconds(90) == 90
    assert ttl_seconds(None) == 0
    assert ttl_seconds(0.001) == 0.001
    # Redis expires in whole milliseconds: less than one would silently mean no expiry.
    for refused in (-1, 0.0004, timedelta(microseconds=500), float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl must be 0"):
            ttl_seconds(refused)


@pytest.mark.parametrize("poll", [0, -1, float("nan"), float("inf"), "0.5"])
def test_a_poll_that_is_not_a_positive_number_of_seconds_is_refused(
    fake: redis.Redis, poll: Any
) -> None:
    # poll=0 looked at Redis about 20,000 times a second while idle; poll=-1 logged a
    # traceback every cycle.
    with pytest.raises(ValueError, match="poll must be") as refused:
        RedisEventBus.log(fake, "k", ttl=60, max_len=10, poll=poll)
    if poll in (0, -1):  # one message for both (trial 190)
        assert str(refused.value) == f"poll must be a finite number of seconds > 0, got {poll!r}"


@pytest.mark.parametrize("interval", [0, -1.0, float("inf"), True, "5"])
def test_a_claim_interval_that_is_not_positive_is_refused(
    fake: redis.Redis, interval: float
) -> None:
    bus = RedisStreamsEventBus(fake, stream="s")
    try:
        with pytest.raises(ValueError, match="claim_interval must be a"):
            bus.consumer("g", "n", claim_interval=interval)
    finally:
        bus.stop(1)


def test_descriptions_and_errors_carry_no_password() -> None:
    client = client_from_settings(
        EventBusSettings(backend="redis", redis_url="redis://user:hunter2@db.example:6380/4")
    )
    assert describe_client(client) == "redis://db.example:6380/4"
    v6 = client_from_settings(EventBusSettings(backend="redis", redis_url="redis://[::1]:6380/2"))
    assert describe_client(v6) == "redis://[::1]:6380/2"
    text = safe_error(ValueError("cannot reach redis://user:hunter2@db.example:6380/4"))
    assert "hunter2" not in text and "ValueError" in text


def test_the_layout_and_the_demos_isolation_show_no_password(fake: redis.Redis) -> None:
    # RedisLayout kept REDIS_URL as a plain str, and Isolation's repr (public, isolate())
    # printed it whole (trial 139).
    from eventbus_redis._capabilities import RedisLayout

    settings = EventBusSettings(backend="redis", redis_url="redis://user:hunter2@db.example:6380/4")
    layout = RedisLayout.from_settings(settings)
    assert "hunter2" not in repr(layout) and str(layout.url).endswith("hunter2@db.example:6380/4")
    bus = RedisEventBus.log(fake, "isolation-test", 60, 100)
    bus._layout = layout
    try:
        isolation = bus.isolate("r1", 10)
        assert "hunter2" not in repr(isolation), repr(isolation)
        assert isolation.env["REDIS_URL"] == "redis://user:hunter2@db.example:6380/4"  # connects
    finally:
        bus.stop(0)


def test_publish_does_no_redis_io_on_the_callers_thread(fake: redis.Redis, prefix: str) -> None:
    callers: set[int] = set()
    real_execute: Any = fake.execute_command

    def spy(*args: Any, **kwargs: Any) -> Any:
        callers.add(threading.get_ident())
        return real_execute(*args, **kwargs)

    fake.execute_command = spy  # type: ignore[method-assign]
    for bus in (
        RedisEventBus.log(fake, f"{prefix}:l", 60, 100),
        RedisStreamsEventBus(fake, f"{prefix}:s"),
    ):
        with bus:
            callers.clear()
            for i in range(2_000):
                bus.publish(make_event(i))
            assert threading.get_ident() not in callers
            assert bus.flush(10)


def test_clients_that_decode_responses_work_too(prefix: str) -> None:
    pytest.importorskip("lupa", reason="fakeredis needs lupa (fakeredis[lua]) to run Lua scripts")
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    with RedisEventBus.log(client, f"{prefix}:l", 60, 100) as log_bus:
        sub = log_bus.subscribe()
        log_bus.publish(make_event(1))
        assert log_bus.flush(10)
        assert sub.get(timeout=10).request_id == "req-1"
        assert log_bus.read_events()[0].log_id == 1
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as stream_bus:
        consumer = stream_bus.consumer(name="c")
        stream_bus.publish(make_event(2))
        assert stream_bus.flush(10)
        got = []
        for _ in range(50):
            got += consumer.read(10, timeout=0.1)
            if got:
                break
        assert [d.event.log_id for d in got] == [1]
        consumer.ack([d.token for d in got])
        assert stream_bus.stream_info()["pending"] == 0


def test_a_key_of_the_wrong_type_is_reported_and_retried_not_raised(
    client: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:wrong"
    client.set(key, "a string, not a list")
    bus = RedisEventBus.log(client, key, 60, 100)
    bus.publish(make_event(1))
    assert not bus.flush(0.3)
    stats = bus.stats()
    assert stats.extra["state"] == "failing" and "WRONGTYPE" in stats.extra["last_error"]
    client.delete(key)  # fixed by the operator: the retried batch goes through
    assert bus.flush(10)
    assert [e.request_id for e in bus.read_events()] == ["req-1"]
    bus.stop()


def test_a_bug_in_the_fast_path_is_logged_once_not_swallowed(
    fake: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As redis-py 5.x's get_connection() did: a TypeError on every batch. The writer still writes
    # every event (synchronously), and says once, at ERROR, what went wrong.
    with RedisEventBus.publisher(fake, f"{prefix}:bug") as bus:
        bus.publish(make_event(0))
        assert bus.flush(10)  # connected: the next batches take the fast path
        sink: Any = bus._writer._appender

        def broken_send(prepared: Any) -> None:
            raise TypeError("get_connection() missing 1 required positional argument")

        sink.send = broken_send
        for i in range(1, 6):
            bus.publish(make_event(i))
            assert bus.flush(10)
        assert [e.log_id for e in bus.read_events()] == [6, 5, 4, 3, 2, 1]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "TypeError" in errors[0].getMessage()
    # The scrubbing filter turns the traceback into (scrubbed) text.
    assert "Traceback" in (errors[0].exc_text or "")


def test_stats_repr_shows_lost_once_and_extra_keeps_it(fake: redis.Redis, prefix: str) -> None:
    bus = RedisEventBus(fake, f"{prefix}:repr")
    bus.publish(make_event(1))
    bus.stop(0)
    stats = bus.stats()
    assert stats.extra["lost"] == stats.lost  # documented in docs/operations.md
    assert repr(stats).count("lost=") == 1
    assert repr(stats).count("'in_doubt'") == 1


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_the_loop_connection_packs_commands_as_redis_py_does(encoding: str) -> None:
    # The loop path packs its batches itself (redis-py's asyncio packer is 3.5x slower); the
    # bytes must be redis-py's, for every argument type it sends, small and large.
    import redis.asyncio.connection as aio

    from eventbus_redis._loop_connection import pack_commands

    conn = aio.Connection(encoding=encoding, encoding_errors="replace")
    tails = [b'"RequestID":"r","Method":"POST"' + bytes([n % 256]) * n for n in (0, 5, 7000)]
    commands: list[tuple[Any, ...]] = [
        ("SET", "key:lease", "12", "PX", 10_000),
        ("EVALSHA", "a" * 40, 2, "k\u00e9y", b"raw", -1, 2**70, "", "\u20ac", *tails),
        (b"PING",),
    ]
    assert pack_commands(commands, conn.encoder) == b"".join(conn.pack_commands(commands))
    # What it does not pack, redis-py does (as before): the caller falls back to it.
    for odd in (True, 1.5, memoryview(b"x"), bytearray(b"x")):
        assert pack_commands([("SET", "k", odd)], conn.encoder) is None
    assert pack_commands([("CONFIG GET", "maxmemory")], conn.encoder) is None
    assert pack_commands([(b"CONFIG GET", "maxmemory")], conn.encoder) is None


@pytest.mark.parametrize("given", [{}, {"socket_timeout": 2.5}, {"socket_connect_timeout": 1.5}])
def test_the_loop_connection_keeps_the_timeouts_the_clients_connections_use(
    given: dict[str, float],
) -> None:
    # redis-py 8 gives its connections 5 s timeouts that connection_kwargs do not show: a
    # client built from a bare URL got a loop connection with no timeout at all, and a
    # frozen Redis held its writer for good (review).
    from eventbus_redis._loop_connection import LoopConnection

    client = redis.Redis.from_url("redis://127.0.0.1:1/0", **given)
    sync = client.connection_pool.connection_class(**client.connection_pool.connection_kwargs)
    loop_conn = LoopConnection(client)
    assert loop_conn._timeout == sync.socket_timeout
    # Applied by the loop connection itself: redis-py's own (asyncio.wait_for, a task per
    # write on Python 3.11) left a task pending on a loop closed by hand mid-write.
    assert loop_conn._conn.socket_timeout is None
    if sync.socket_timeout:
        connect = sync.socket_connect_timeout or sync.socket_timeout
        assert loop_conn._connect_within == connect + sync.socket_timeout
