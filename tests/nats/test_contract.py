"""`NatsEventBus` passes the shared behavioural contract, and the contract classes of every
capability it declares, against the real nats-server."""

from __future__ import annotations

from collections.abc import Callable

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

pytestmark = pytest.mark.nats


class TestNatsContract(BusContractTests):
    factory: Callable[..., NatsEventBus]

    @pytest.fixture(autouse=True)
    def _nats(self, make_bus: Callable[..., NatsEventBus]) -> None:
        self.factory = make_bus

    def make_bus(self, buffer_size: int) -> EventBus:
        return self.factory(buffer_size=buffer_size, max_msgs=0)

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
