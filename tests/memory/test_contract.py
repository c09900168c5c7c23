"""The in-memory backend passes the shared behavioural contract."""

from __future__ import annotations

from eventbus_core import EventBus
from eventbus_core.testing import BusContractTests
from eventbus_memory import InMemoryEventBus


class TestInMemoryContract(BusContractTests):
    def make_bus(self, buffer_size: int) -> EventBus:
        return InMemoryEventBus(buffer_size)
