"""The dispatcher says when its event loop was held, naming the sinks that were sending."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

from eventbus_core import Dispatcher
from eventbus_core.dispatch._loop_lag import LoopLagWatch
from eventbus_memory import InMemoryEventBus
from tests.core.conftest_dispatch import RecordingSink, make_events


class BlockingSink(RecordingSink):
    """An async send() that blocks the loop (a synchronous client's call) on its first batch."""

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        if not self.calls:
            time.sleep(1.3)
        await super().send(batch)


async def test_a_sink_blocking_the_loop_is_named(caplog: pytest.LogCaptureFixture) -> None:
    # A sink sleeping 2 s in its async send() stalled every other sink, and no line said so
    # (trial 268).
    caplog.set_level(logging.WARNING, logger="eventbus")
    bus = InMemoryEventBus()
    blocking, other = BlockingSink("blocking"), RecordingSink("other")
    dispatcher = Dispatcher(bus, [blocking, other], batch_size=10, flush_interval=0.01)
    run = asyncio.create_task(dispatcher.run())
    for event in make_events(5):
        bus.publish(event)
    await asyncio.wait_for(blocking.wait_for(5), 30)
    await asyncio.sleep(0.3)  # the watch wakes late, and notes it
    dispatcher.request_stop()
    await asyncio.wait_for(run, 30)
    bus.stop()
    said = [r.getMessage() for r in caplog.records if "event loop was held" in r.getMessage()]
    assert said, caplog.text  # the first at once (a loaded machine may add a later one)
    assert "held for up to " in said[0] and "1 time(s) (1 in all)" in said[0]
    assert "while sink(s) 'blocking' were sending" in said[0]
    assert "send_blocking()" in said[0]


async def test_a_loop_held_while_no_sink_sends_blames_other_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="eventbus")
    watch = LoopLagWatch([], held=0.4)
    watching = asyncio.create_task(watch.run())
    await asyncio.sleep(0.3)
    time.sleep(0.7)  # this test's own code holds the loop
    await asyncio.sleep(0.3)
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    assert watch.holds >= 1
    assert "while no sink was sending (a transformer, another plugin" in caplog.text
    assert "a sink's async send()" not in caplog.text


async def test_a_loop_never_held_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="eventbus")
    watch = LoopLagWatch([], held=1.0)
    watching = asyncio.create_task(watch.run())
    await asyncio.sleep(0.6)
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    assert watch.holds == 0 and "held" not in caplog.text
