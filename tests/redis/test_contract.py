"""Both Redis backends pass the shared behavioural contract, and the contract classes of the
capabilities they declare, on fakeredis and on a real server."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis

from eventbus_core import BusStats, EventBus, SubscriberStats
from eventbus_core.testing import (
    BacklogContract,
    BusContractTests,
    ConsumerGroupContract,
    CrossProcessContract,
    DescribableContract,
    IsolatableContract,
    LogSourcesContract,
    ReachableContract,
    ReadableLogContract,
)
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests._proxy import ReplyHoldingProxy


class _RedisContract(BusContractTests):
    """Gives each test a client and a unique key prefix (fixture `client` of conftest)."""

    in_process = False  # subscribers read what the writer stored in Redis
    redis_client: redis.Redis
    key_prefix: str
    proxies: list[ReplyHoldingProxy]

    @pytest.fixture(autouse=True)
    def _redis(self, client: redis.Redis, prefix: str) -> Iterator[None]:
        self.redis_client = client
        self.key_prefix = prefix
        self.proxies = []
        yield
        for proxy in self.proxies:
            proxy.close()

    def make_slow_bus(self, buffer_size: int) -> EventBus | None:
        """The bus of `make_bus()` behind a relay that holds Redis's replies: its first write
        (its connection's handshake included) never finishes."""
        if isinstance(self.redis_client, fakeredis.FakeRedis):
            return None  # no socket to hold in fakeredis (real: the other run)
        options = self.redis_client.connection_pool.connection_kwargs
        if "port" not in options:
            return None  # a unix socket: no TCP to relay
        proxy = ReplyHoldingProxy.holding(options["port"], options.get("host", "127.0.0.1"))
        self.proxies.append(proxy)
        served = self.redis_client
        # The test server's client as it is (database, password, TLS), through the relay.
        relayed = {**options, "host": "127.0.0.1", "port": proxy.port}
        self.redis_client = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=served.connection_pool.connection_class, **relayed
            )
        )
        try:
            return self.make_bus(buffer_size)
        finally:
            self.redis_client = served

    @staticmethod
    def assert_accounted(stats: BusStats, figures: SubscriberStats) -> None:
        """Exact, except for the batch in doubt (docs/backends/redis.md, "stop() and lost"): a
        batch Redis applied whose reply the writer had not read at stop()'s deadline is counted
        in `lost` and `extra["in_doubt"]`, and a subscription may have been handed it."""
        accounted = figures.delivered + figures.dropped
        expected = stats.published - stats.lost
        in_doubt = stats.extra["in_doubt"]
        assert 0 <= in_doubt <= stats.lost
        assert expected <= accounted <= expected + in_doubt, (
            f"subscriber {figures.name}: delivered {figures.delivered} + dropped "
            f"{figures.dropped} = {accounted}, but published {stats.published} - lost "
            f"{stats.lost} = {expected} (in doubt: {in_doubt}): events went missing without "
            "being counted, or twice"
        )

    def settle(self, bus: EventBus) -> None:
        assert isinstance(bus, RedisEventBus | RedisStreamsEventBus)
        assert bus.flush(10.0)

    def test_the_bus_works_on_in_a_forked_child(self) -> None:
        if isinstance(self.redis_client, fakeredis.FakeRedis):
            # fakeredis's server lives in this process, behind a lock that the parent's
            # subscriber thread holds while it waits for entries: a child inherits it held,
            # and its first command waits for ever. A real server has no such lock.
            pytest.skip("fakeredis's in-process server is not fork-safe (real: the other run)")
        super().test_the_bus_works_on_in_a_forked_child()

    def test_a_process_that_ends_without_stop_delivers_what_it_accepted(self) -> None:
        if isinstance(self.redis_client, fakeredis.FakeRedis):
            # The same lock; and a child's fakeredis server is a copy no other process reads.
            pytest.skip("fakeredis's in-process server is not fork-safe (real: the other run)")
        super().test_a_process_that_ends_without_stop_delivers_what_it_accepted()


class TestRedisLogContract(_RedisContract):
    def make_bus(self, buffer_size: int) -> EventBus:
        return RedisEventBus.log(
            self.redis_client, f"{self.key_prefix}:log", 300, 0, buffer_size=buffer_size
        )


class TestRedisStreamsContract(_RedisContract):
    def make_bus(self, buffer_size: int) -> EventBus:
        return RedisStreamsEventBus(
            self.redis_client, f"{self.key_prefix}:stream", buffer_size=buffer_size, max_len=0
        )


class _RedisCapabilities(
    ReachableContract,
    CrossProcessContract,
    ReadableLogContract,
    DescribableContract,
    IsolatableContract,
    LogSourcesContract,
):
    """The capability classes both Redis buses declare; every bus of a test on its keys."""

    in_process = False
    redis_client: redis.Redis
    key_prefix: str

    @pytest.fixture(autouse=True)
    def _redis(self, client: redis.Redis, prefix: str) -> None:
        self.redis_client = client
        self.key_prefix = prefix

    def settle(self, bus: EventBus) -> None:
        assert isinstance(bus, RedisEventBus | RedisStreamsEventBus)
        assert bus.flush(10.0)


class TestRedisLogCapabilities(_RedisCapabilities):
    def make_bus(self, buffer_size: int) -> EventBus:
        return RedisEventBus.log(
            self.redis_client, f"{self.key_prefix}:log", 300, 0, buffer_size=buffer_size
        )

    def make_unreachable_bus(self) -> EventBus:
        return RedisEventBus(redis.Redis(host="127.0.0.1", port=1), f"{self.key_prefix}:log")


class TestRedisStreamsCapabilities(_RedisCapabilities, ConsumerGroupContract, BacklogContract):
    def make_bus(self, buffer_size: int) -> EventBus:
        return RedisStreamsEventBus(
            self.redis_client, f"{self.key_prefix}:stream", buffer_size=buffer_size, max_len=0
        )

    def make_unreachable_bus(self) -> EventBus:
        client = redis.Redis(host="127.0.0.1", port=1)
        return RedisStreamsEventBus(client, f"{self.key_prefix}:stream")
