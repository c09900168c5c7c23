"""The `Backlog` capability of a Redis streams consumer (read by the metrics at scrape time),
and the `group_joined` figure readiness watches."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventbus_core.capabilities import Backlog
from eventbus_core.testing import make_event
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests.redis._servers import ThrowawayRedis
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
    client: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The warning read "5 pending entries were of <stream> trimmed" (trial 104); it came once
    # per batch a restarted consumer re-read, 34 lines in 35 ms (trial 244), and called
    # entries lost that the dead consumer's sinks may have had.
    import eventbus_redis._consumer as consumer_module

    # A period no test outlasts: what follows the first line is said at close, not by the clock.
    monkeypatch.setattr(consumer_module, "_SAY_TRIMMED_EVERY", 3600.0)
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        for i in range(50):
            bus.publish(make_event(i))
        assert bus.flush(10)
        read_all(bus.consumer(name="c1", batch_size=50, claim_idle=60), 50)  # pending, then gone
        client.xtrim(stream, maxlen=0, approximate=False)
        again = bus.consumer(name="c1", batch_size=10, claim_idle=60)  # as after a restart
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            for _ in range(6):
                assert again.read(10, timeout=0.05) == []
            assert again.figures()["missed"] == 50
            said = [r.getMessage() for r in caplog.records if "trimmed (MAXLEN)" in r.getMessage()]
            assert len(said) == 1, said  # the first batch's, at once; the rest within 10 s
            again.close()  # says what is left
    said = [r.getMessage() for r in caplog.records if "trimmed (MAXLEN)" in r.getMessage()]
    tail = (
        "trimmed (MAXLEN) or deleted before they were acknowledged: a consumer that died held "
        "them, and whether its sinks got them before it died is unknown ("
    )
    assert said == [
        f"eventbus redis: 10 pending entries of {stream} were {tail}10 in all, counted in missed)",
        f"eventbus redis: 40 pending entries of {stream} were {tail}50 in all, counted in missed)",
    ], said


def _acl_user(admin: redis.Redis, server: ThrowawayRedis, user: str, *rules: str) -> redis.Redis:
    """A client of `server` signed in as `user`, made by `admin` with password "pw" and the ACL
    `rules`."""
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", *rules)
    host = admin.connection_pool.connection_kwargs["host"]
    return redis.Redis(host=host, port=server.port, username=user, password="pw")


@contextlib.contextmanager
def _stream_consumer(
    server: ThrowawayRedis, stream: str
) -> Iterator[tuple[redis.Redis, RedisStreamsEventBus, Any]]:
    """A client of `server`, a bus on `stream` (group g) and its consumer c; closed after, and
    the server's memory limit lifted (a test may have set it)."""
    admin = redis.Redis.from_url(server.url)
    bus = RedisStreamsEventBus(admin, stream, "g")
    consumer = bus.consumer(name="c", batch_size=50, claim_idle=60)
    try:
        yield admin, bus, consumer
    finally:
        admin.config_set("maxmemory", "0")
        consumer.close()
        bus.stop(1)
        admin.close()


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
    # Said once per consumer within 10 s (it was at nearly every read), the rest at close:
    # the warnings add up to the count.
    assert len(said) <= 2 * len(consumers)
    assert sum(int(line.split()[2]) for line in said) == missed


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


def test_an_entry_deleted_with_xdel_is_not_counted_as_trimmed(
    client: redis.Redis, prefix: str
) -> None:
    # Counted as a MAXLEN loss, with advice to raise MAXLEN (review 170): XDEL is no trim.
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c", batch_size=50, claim_idle=60)
        assert consumer.read(10, timeout=0) == []
        for i in range(5):
            bus.publish(make_event(i))
        assert bus.flush(10)
        client.xdel(stream, client.xrange(stream, count=1)[0][0])
        assert _drain([consumer]) == 4
        assert consumer.figures()["missed"] == 0
        consumer.close()


def test_trimmed_entries_a_live_consumer_holds_are_not_counted_lost_by_a_peers_reclaim(
    client: redis.Redis, prefix: str
) -> None:
    # Redis 7's XAUTOCLAIM drops every pending entry trimmed from the stream, however recently
    # read: a peer's reclaim counted what the caller still held, and then delivered, as lost
    # (trial 168: missed 985 of a real 885). A dead consumer's (idle past claim_idle) are lost.
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g", max_len=100) as bus:
        alive = bus.consumer(name="alive", batch_size=50, claim_idle=60)
        dead = bus.consumer(name="dead", batch_size=50, claim_idle=60)
        for i in range(100):
            bus.publish(make_event(i))
        assert bus.flush(10)
        held = alive.read(50, timeout=1)
        gone = dead.read(50, timeout=1)
        assert len(held) == len(gone) == 50
        time.sleep(0.5)  # both idle past the peer's claim_idle; the live one says it is alive
        alive.keep_alive()
        client.xtrim(stream, maxlen=0, approximate=False)
        peer = bus.consumer(name="peer", batch_size=50, claim_idle=0.4, claim_interval=0.05)
        deadline = time.monotonic() + 0.25  # the live one's entries stay fresher than 0.4 s
        while time.monotonic() < deadline:
            assert peer.read(50, timeout=0.05) == []
        assert peer.figures()["missed"] == 50  # the dead one's, whose content is gone
        alive.ack([d.token for d in held])  # processed: delivered, not lost
        assert alive.figures()["missed"] == 0 and alive.figures()["acked"] == 50
        assert alive.figures()["ack_unheld"] == 0  # still pending: the peer left them alone
        for consumer in (alive, dead, peer):
            consumer.close()


def test_a_counting_script_redis_refuses_turns_counting_off_and_reading_goes_on(
    client: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An ACL without XINFO or XGROUP, say: the read it came with must still be taken.
    monkeypatch.setattr(
        "eventbus_redis._consumer.STREAM_COUNT_UNREAD_TRIMMED",
        "return redis.error_reply('NOPERM this user has no permissions to run XINFO')",
    )
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c", batch_size=50, claim_idle=60)
        for i in range(5):
            bus.publish(make_event(i))
        assert bus.flush(10)
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            assert _drain([consumer]) == 5
        consumer.close()
    said = [r.getMessage() for r in caplog.records if "cannot run its scripts" in r.getMessage()]
    assert len(said) == 1 and "no permissions to run XINFO" in said[0]


def test_a_killed_consumers_entries_trimmed_at_once_are_counted_once_they_are_stale(
    client: redis.Redis, prefix: str
) -> None:
    # Trimmed before they were claim_idle old, a peer's XAUTOCLAIM dropped them while their
    # consumer still looked alive: never counted, 80 events lost with exit 0 (trial 171).
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g", max_len=100) as bus:
        killed = bus.consumer(name="killed", batch_size=50, claim_idle=60)
        for i in range(50):
            bus.publish(make_event(i))
        assert bus.flush(10)
        assert len(killed.read(50, timeout=1)) == 50  # then it dies, holding them
        client.xtrim(stream, maxlen=0, approximate=False)
        peer = bus.consumer(name="peer", batch_size=50, claim_idle=0.3, claim_interval=0.05)
        assert peer.read(50, timeout=0.05) == [] and peer.figures()["missed"] == 0  # fresh yet
        deadline = time.monotonic() + 3
        while peer.figures()["missed"] < 50 and time.monotonic() < deadline:
            assert peer.read(50, timeout=0.05) == []
        assert peer.figures()["missed"] == 50
        assert bus.stream_info()["pending"] == 0
        peer.close()


@pytest.mark.redis
@pytest.mark.parametrize("denied", [("-eval", "-evalsha"), ("-xinfo",)], ids=["eval", "xinfo"])
def test_a_redis_user_who_may_not_run_scripts_reads_all_the_same(
    denied: tuple[str, ...], throwaway: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # Such a user could not read at all: the group's creation script failed, and dispatch
    # retried for ever (trials 171, 173: without XINFO, Redis words the refusal "can't run
    # this command"). It reads now, uncounted, and is told so once.
    admin = redis.Redis.from_url(throwaway.url)
    reader = _acl_user(admin, throwaway, "reader", "~*", "&*", "+@all", *denied)
    writer = RedisStreamsEventBus(admin, "s", "g")  # the writer may run its scripts
    for i in range(5):
        writer.publish(make_event(i))
    assert writer.flush(10)
    with RedisStreamsEventBus(reader, "s", "g") as bus:
        consumer = bus.consumer(name="c", batch_size=50, claim_idle=60)
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            assert _drain([consumer]) == 5
        consumer.close()
    writer.stop(1)
    said = [r.getMessage() for r in caplog.records if "cannot run its scripts" in r.getMessage()]
    assert len(said) == 1


@pytest.mark.redis
def test_a_redis_user_who_may_not_publish_writes_the_log_once(throwaway: ThrowawayRedis) -> None:
    # The LIST writer's script ends with a PUBLISH that wakes subscribers: a user whose ACL
    # refuses it failed every batch after its LPUSH, and nothing was counted written (trial 193).
    admin = redis.Redis.from_url(throwaway.url)
    client = _acl_user(admin, throwaway, "writer", "~*", "&*", "+@all", "-publish")
    bus = RedisEventBus.log(client, "nopub", ttl=60, max_len=0)
    sub = bus.subscribe()  # wakes by polling instead
    for i in range(50):
        bus.publish(make_event(i))
    assert bus.flush(10)
    assert [sub.get(timeout=10).request_id for _ in range(50)] == [f"req-{i}" for i in range(50)]
    bus.stop(1)
    assert (bus.stats().extra["written"], bus.stats().lost) == (50, 0)
    assert admin.llen("nopub") == 50
    client.close()
    admin.close()


@pytest.mark.redis
def test_a_consumer_started_while_redis_is_out_of_memory_waits_instead_of_raising(
    throwaway: ThrowawayRedis,
) -> None:
    # At maxmemory with noeviction, Redis refuses a script that may write: the group's
    # creation raised OutOfMemoryError from the first read() (trial 193).
    admin = redis.Redis.from_url(throwaway.url)
    writer = RedisStreamsEventBus(admin, "oom", "g")
    for i in range(5):
        writer.publish(make_event(i))
    assert writer.flush(10)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # full at once
    bus = RedisStreamsEventBus(admin, "oom", "g")
    consumer = bus.consumer(name="c", batch_size=50, claim_idle=60)
    try:
        assert consumer.read(50, timeout=0.3) == []
        assert "OutOfMemoryError" in str(consumer.figures()["last_error"])
        admin.config_set("maxmemory", "0")
        assert _drain([consumer]) == 5
    finally:
        admin.config_set("maxmemory", "0")
        consumer.close()
        bus.stop(1)
        writer.stop(1)
        admin.close()


@pytest.mark.redis
def test_a_group_deleted_by_hand_is_no_loss_but_redis_losing_its_data_is(
    throwaway: ThrowawayRedis,
) -> None:
    # XGROUP DESTROY keeps the stream: its entries come again, nothing is lost, and a dispatcher
    # must not exit 1 for it (review 196). A flush loses what was not read: counted.
    with _stream_consumer(throwaway, "kept") as (admin, bus, consumer):
        for i in range(3):
            bus.publish(make_event(i))
        assert bus.flush(10)
        assert _drain([consumer]) == 3
        admin.xgroup_destroy("kept", "g")
        assert _drain([consumer]) == 3  # delivered again from the stream's start
        assert consumer.figures()["missed_unknown"] == 0
        admin.flushall()
        bus.publish(make_event(9))
        assert bus.flush(10)
        assert _drain([consumer]) == 1
        assert consumer.figures()["missed_unknown"] == 1


@pytest.mark.redis
def test_a_full_redis_neither_stalls_a_consumer_that_has_its_group_nor_raises_without_it(
    throwaway: ThrowawayRedis,
) -> None:
    # Under maxmemory: after a connection blip the creation script (refused) was the only way
    # to find the group again, and the consumer read nothing; with the group deleted, the
    # OutOfMemoryError escaped read() (review 196).
    with _stream_consumer(throwaway, "full") as (admin, bus, consumer):
        bus.publish(make_event(0))
        assert bus.flush(10)
        assert _drain([consumer]) == 1
        for i in range(1, 4):
            bus.publish(make_event(i))
        assert bus.flush(10)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        consumer._note_error(redis.ConnectionError("a blip"))  # as a cut connection would
        assert _drain([consumer]) == 3
        admin.xgroup_destroy("full", "g")
        assert consumer.read(50, timeout=0.3) == []  # retried, not raised
        assert "OutOfMemoryError" in str(consumer.figures()["last_error"])


@pytest.mark.redis
def test_a_read_counter_lost_by_a_reload_is_no_trim(throwaway: ThrowawayRedis) -> None:
    # Redis 7.0 loads a group's entries-read from its append-only file as 0: every entry ever
    # added was counted as trimmed unread, after a restart WITH persistence (trial 195). Here
    # the counter is set as the reload leaves it.
    with _stream_consumer(throwaway, "reload") as (admin, bus, consumer):
        for i in range(100):
            bus.publish(make_event(i))
        assert bus.flush(10)
        first = consumer.read(50, timeout=1)
        consumer.ack([d.token for d in first])
        last = admin.xinfo_groups("reload")[0]["last-delivered-id"]
        admin.execute_command("XGROUP", "SETID", "reload", "g", last, "ENTRIESREAD", 0)
        assert len(first) + _drain([consumer]) == 100
        assert consumer.figures()["missed"] == 0
        group = admin.xinfo_groups("reload")[0]
        assert (group["entries-read"], group["lag"]) == (100, 0)  # exact again


@pytest.mark.redis
def test_a_log_subscriber_who_may_not_subscribe_polls_with_one_warning(
    throwaway: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # The wake-up channel refused by an ACL failed every look: some 25 warnings a second and a
    # traceback, though polling delivered everything (trial 195).
    admin = redis.Redis.from_url(throwaway.url)
    client = _acl_user(admin, throwaway, "reader", "~*", "+@all", "-subscribe")
    bus = RedisEventBus.log(client, "nosub", ttl=60, max_len=0)
    with caplog.at_level(logging.WARNING, logger="eventbus"):
        sub = bus.subscribe()
        for i in range(20):
            bus.publish(make_event(i))
        assert bus.flush(10)
        assert [sub.get(timeout=10).request_id for _ in range(20)] == [
            f"req-{i}" for i in range(20)
        ]
        time.sleep(1.0)  # looks meanwhile, by polling
    bus.stop(1)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "may not SUBSCRIBE" in said[0], said
    client.close()
    admin.close()


@pytest.mark.redis
def test_the_acl_grant_redis_md_gives_is_enough_for_both_backends(
    throwaway: ThrowawayRedis,
) -> None:
    # docs/backends/redis.md gives this grant; its earlier list of commands missed SCRIPT LOAD,
    # the transactions and the stream subscription's commands (review 196).
    admin = redis.Redis.from_url(throwaway.url)
    grant = "~llm-proxy-events* &llm-proxy-events:notify +@read +@write +@keyspace +@scripting"
    grant += " +@transaction +@connection +@pubsub -@dangerous"
    client = _acl_user(admin, throwaway, "eventbus", *grant.split())
    log = RedisEventBus.log(client, "llm-proxy-events", ttl=60, max_len=1000)
    sub = log.subscribe()
    for _ in range(2):  # the second after SCRIPT FLUSH, as a restarted server forgets them
        for i in range(150):  # batches of 100 and more go by transaction
            log.publish(make_event(i))
        assert log.flush(10), log.stats()
        assert len([sub.get(timeout=10) for _ in range(150)]) == 150
        admin.script_flush()
    log.stop(2)
    assert (log.stats().extra["written"], log.stats().lost) == (300, 0)
    streams = RedisStreamsEventBus(client, "llm-proxy-events-stream", "g")
    ssub = streams.subscribe()
    consumer = streams.consumer(name="c", batch_size=50, claim_idle=0.1, claim_interval=0.05)
    for i in range(150):
        streams.publish(make_event(i))
    assert streams.flush(10)
    assert _drain([consumer]) == 150
    assert consumer.figures()["last_error"] is None
    assert len([ssub.get(timeout=10) for _ in range(150)]) == 150
    assert consumer.backlog() == {"lag": 0, "pending": 0}
    consumer.close()
    streams.stop(2)
    client.close()
    admin.close()


def test_a_list_log_subscription_reports_its_lag_for_the_metrics(
    client: redis.Redis, prefix: str
) -> None:
    # A dispatcher's lane on the LIST log had no eventbus_consumer_lag at all: its subscription
    # offered no Backlog. The lag is what the log holds past what the subscription was handed.
    import asyncio

    from eventbus_core import Dispatcher
    from eventbus_core.metrics._figures import FiguresReader

    bus = RedisEventBus.log(client, f"{prefix}:log", ttl=60, max_len=10_000)
    release = asyncio.Event()

    class Held:
        name = "held"

        async def send(self, batch: Any) -> None:
            await release.wait()

        async def close(self) -> None:
            pass

    async def run() -> tuple[dict[str, Any], dict[str, Any], int]:
        dispatcher = Dispatcher(
            bus, [Held()], batch_size=10, queue_size=10, flush_interval=0.01,
            subscription_buffer=20,
        )  # fmt: skip
        task = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(0.3)  # subscribed
        for i in range(300):
            bus.publish(make_event(i))
        assert await asyncio.to_thread(bus.flush, 5)
        reader = FiguresReader(dispatcher=dispatcher, backlog_timeout=2.0)
        seen: list[tuple[int, int]] = []  # (read, lag): once the lane rests, two agree
        for _ in range(50):
            await asyncio.sleep(0.1)
            figures = await asyncio.to_thread(reader.read)
            assert figures.dispatcher is not None
            held, read = figures.backlog, figures.dispatcher.read
            seen.append((read, held["held"]["lag"] or 0))
            if len(seen) > 1 and seen[-1] == seen[-2]:
                break
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.05)
            done = (await asyncio.to_thread(FiguresReader(dispatcher=dispatcher).read)).backlog
            if done.get("held", {}).get("lag") == 0:
                break
        dispatcher.stop()
        await task
        return held, done, read

    held, done, read = asyncio.run(run())
    bus.stop(1)
    # 300 published; the sink holds one batch, its queue 10, the subscription 20, the rest is
    # in Redis: all but what the lane read is lag (the subscription's 20 were in no figure,
    # trial 222).
    assert held["held"]["lag"] + read == 300, (held, read)
    assert held["held"]["lag"] >= 250 and held["held"]["pending"] is None, held
    assert done["held"]["lag"] == 0, done
    sub = RedisStreamsEventBus(client, f"{prefix}:s").subscribe()
    assert isinstance(sub, Backlog) and sub.backlog()["lag"] is None  # streams: cannot count


def test_a_frozen_redis_holds_only_the_first_scrape_of_a_list_lanes_lag(
    throwaway: ThrowawayRedis,
) -> None:
    # Each scrape waited the lag question's own 1 s, where a stream lane's waits only once
    # until its question returns (docs/operations.md; trial 211).
    import asyncio
    import os
    import signal

    from eventbus_core import Dispatcher
    from eventbus_core.metrics._figures import FiguresReader

    client = redis.Redis.from_url(throwaway.url)
    bus = RedisEventBus.log(client, "t211:lag", ttl=60, max_len=1000)
    assert throwaway.proc is not None

    class Keeps:
        name = "keeps"

        async def send(self, batch: Any) -> None:
            pass

        async def close(self) -> None:
            pass

    async def run() -> tuple[float, float]:
        dispatcher = Dispatcher(bus, [Keeps()], flush_interval=0.01)
        task = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(0.3)
        reader = FiguresReader(dispatcher=dispatcher)
        assert (await asyncio.to_thread(reader.read)).backlog == {
            "keeps": {"lag": 0, "pending": None}
        }
        os.kill(throwaway.proc.pid, signal.SIGSTOP)
        try:
            took = []
            for _ in range(2):
                started = time.monotonic()
                await asyncio.to_thread(reader.read)  # one reader, as /metrics keeps
                took.append(time.monotonic() - started)
        finally:
            os.kill(throwaway.proc.pid, signal.SIGCONT)
        dispatcher.stop()
        await task
        return took[0], took[1]

    first, second = asyncio.run(run())
    bus.stop(1)
    client.close()
    assert first <= 2.5 and second < 0.5, (first, second)
