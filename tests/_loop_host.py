"""An event loop in a thread, and a bus wrapper that makes every publish() on it: for running
the contract suite on a backend's asyncio publishing path."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from eventbus_core import BusStats


class LoopThread:
    """An event loop running in a daemon thread, for tests that publish onto it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class PublishOnLoop:
    """Forwards to `bus`, making every publish() on the loop thread (queued in order; every
    other call first waits until the queued publishes have run)."""

    def __init__(self, bus: Any, host: LoopThread) -> None:
        self.bus = bus
        self.host = host
        self.buffer_size = bus.buffer_size

    def publish(self, event: Any) -> None:
        self.host.loop.call_soon_threadsafe(self.bus.publish, event)

    def barrier(self) -> None:
        self.host.call(lambda: None)

    def subscribe(self, name: str | None = None, *, buffer_size: int | None = None) -> Any:
        self.barrier()
        return self.bus.subscribe(name, buffer_size=buffer_size)

    def flush(self, timeout: float | None = 5.0) -> bool:
        self.barrier()
        return bool(self.bus.flush(timeout))

    def stop(self, timeout: float | None = None) -> None:
        self.barrier()
        self.bus.stop(timeout)

    def stats(self) -> BusStats:
        self.barrier()
        stats: BusStats = self.bus.stats()
        return stats


class NoForkThroughTheHost:
    """For contract classes whose buses publish through `PublishOnLoop`: the contract's fork
    and exit tests cannot run there, since a forked child has no loop thread of the host's. A child
    forked from a loop is tested on its own (`test_a_child_forked_from_a_loop_*`)."""

    def test_the_bus_works_on_in_a_forked_child(self) -> None:
        import pytest

        pytest.skip("this harness publishes through the parent's loop thread, which a child lacks")

    def test_a_process_that_ends_without_stop_delivers_what_it_accepted(self) -> None:
        import pytest

        pytest.skip("this harness publishes through the parent's loop thread, which a child lacks")
