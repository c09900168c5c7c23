"""`publish()` of the NATS bus gives its buffer's verdict, as the other built-in buses do: True
for an accepted event, False for one counted as dropped (it returned None, trial 235)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eventbus_core.testing import make_event
from eventbus_nats import NatsEventBus

pytestmark = pytest.mark.nats


def test_publish_says_whether_it_accepted_the_event(
    make_bus: Callable[..., NatsEventBus],
) -> None:
    bus = make_bus()
    assert bus.publish(make_event(1)) is True
    bus.stop(5)
    assert bus.publish(make_event(2)) is False
    stats = bus.stats()
    assert (stats.published, stats.dropped, stats.lost) == (1, 1, 0)
