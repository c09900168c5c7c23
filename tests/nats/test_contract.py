"""`NatsEventBus` passes the shared behavioural contract, and the contract classes of every
capability it declares, against the real nats-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from eventbus_core import EventBus
from eventbus_core.testing import (
    BacklogContract,
    BusContractTests,
    ConsumerGroupContract,
    CrossProcessContract,
    DescribableContract,
    IsolatableContract,
    ReachableContract,
    ReadableLogContract,
)
from eventbus_nats import NatsEventBus
from tests._proxy import ReplyHoldingProxy

pytestmark = pytest.mark.nats


class TestNatsContract(BusContractTests):
    factory: Callable[..., NatsEventBus]

    @pytest.fixture(autouse=True)
    def _nats(self, make_bus: Callable[..., NatsEventBus], nats_url: str) -> Iterator[None]:
        self.factory = make_bus
        self.url = nats_url
        self.proxies: list[ReplyHoldingProxy] = []
        yield
        for proxy in self.proxies:
            proxy.close()

    def make_bus(self, buffer_size: int) -> EventBus:
        return self.factory(buffer_size=buffer_size, max_msgs=0)

    def make_slow_bus(self, buffer_size: int) -> EventBus | None:
        """A bus behind a relay that holds the server's replies: its connection never
        completes, so its first write never finishes."""
        port = urlsplit(self.url).port or 4222
        proxy = ReplyHoldingProxy.holding(port)
        self.proxies.append(proxy)
        return self.factory(url=f"nats://127.0.0.1:{proxy.port}", buffer_size=buffer_size)

    def settle(self, bus: EventBus) -> None:
        assert isinstance(bus, NatsEventBus)
        assert bus.flush(10.0)


class TestNatsCapabilities(
    ReachableContract,
    CrossProcessContract,
    ReadableLogContract,
    DescribableContract,
    ConsumerGroupContract,
    BacklogContract,
    IsolatableContract,
):
    factory: Callable[..., NatsEventBus]

    @pytest.fixture(autouse=True)
    def _nats(self, make_bus: Callable[..., NatsEventBus]) -> None:
        self.factory = make_bus

    def make_bus(self, buffer_size: int) -> EventBus:
        return self.factory(buffer_size=buffer_size, max_msgs=0)

    def make_unreachable_bus(self) -> EventBus:
        return NatsEventBus("nats://127.0.0.1:1")

    def settle(self, bus: EventBus) -> None:
        assert isinstance(bus, NatsEventBus)
        assert bus.flush(10.0)
