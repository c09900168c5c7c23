"""RecordingBus: the test double applications use in their own tests."""

from __future__ import annotations

import pytest

from eventbus_core import EventBus
from eventbus_core.testing import BusContractTests, RecordingBus, make_event


class TestRecordingBusContract(BusContractTests):
    def make_bus(self, buffer_size: int) -> EventBus:
        return RecordingBus(buffer_size)


def test_assertion_helpers() -> None:
    bus = RecordingBus()
    bus.assert_nothing_published()
    bus.publish(make_event(1, status=500))
    bus.publish(make_event(2))
    assert bus.assert_published(1, status=500)[0].request_id == "req-1"
    bus.assert_published(path="/v1/chat/completions")
    with pytest.raises(AssertionError, match="expected 3 event"):
        bus.assert_published(3)
    with pytest.raises(AssertionError, match="expected no events"):
        bus.assert_nothing_published()
    bus.clear()
    bus.assert_nothing_published()
