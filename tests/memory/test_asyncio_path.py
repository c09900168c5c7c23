"""InMemoryEventBus drained by the publishing event loop (the asyncio path of the batching core).

The contract suite runs twice more: with every publish() made on a running loop (drained by
loop timers there), and with the loop bound first and the publishes coming from another thread
(`call_soon_threadsafe`). The other tests cover the loop's life: a loop that ends with events
undrained, a bus made before the loop, stop() on the loop, a fork, the setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eventbus_core import BusStats, EventBus, EventBusSettings, Subscription, create_bus
from eventbus_core.batching import LoopDriver, ThreadDriver, check_fork
from eventbus_core.testing import BusContractTests, make_event
from eventbus_memory import InMemoryEventBus
from tests._forked import read_from_child, retried_if_hung, wait_child
from tests._loop_host import LoopThread, NoForkThroughTheHost, PublishOnLoop


@pytest.fixture(scope="module")
def host() -> Iterator[LoopThread]:
    h = LoopThread()
    yield h
    h.close()


class TestContractPublishingOnTheLoop(NoForkThroughTheHost, BusContractTests):
    @pytest.fixture(autouse=True)
    def _host(self, host: LoopThread) -> None:
        self.loop_host = host

    def make_bus(self, buffer_size: int) -> EventBus:
        bus = InMemoryEventBus(buffer_size, publish_path="asyncio")
        return PublishOnLoop(bus, self.loop_host)  # type: ignore[return-value]


class TestContractBoundLoopForeignPublishers(BusContractTests):
    @pytest.fixture(autouse=True)
    def _host(self, host: LoopThread) -> None:
        self.loop_host = host

    def make_bus(self, buffer_size: int) -> EventBus:
        bus = InMemoryEventBus(buffer_size)
        self.loop_host.call(bus._batcher.kick)  # the loop drains from now on
        assert isinstance(bus._batcher._driver, LoopDriver)
        return bus

    def test_a_process_that_ends_without_stop_delivers_what_it_accepted(self) -> None:
        pytest.skip("make_bus() here asks the parent's loop thread, which a child lacks")


def _figures(stats: BusStats) -> tuple[int, int, int]:
    return stats.published, stats.dropped, stats.lost


def _drainer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "eventbus-memory-worker"]


def test_a_bus_published_to_on_a_loop_runs_no_thread_and_wakes_async_readers() -> None:
    before = len(_drainer_threads())

    async def main() -> list[str]:
        bus = InMemoryEventBus(1000)
        sub = bus.subscribe()

        async def read() -> list[str]:
            return [(await sub.aget(timeout=5)).request_id for _ in range(300)]

        reader = asyncio.create_task(read())
        for i in range(300):
            bus.publish(make_event(i))
            if i % 50 == 0:
                await asyncio.sleep(0)
        got = await reader
        assert isinstance(bus._batcher._driver, LoopDriver)
        assert len(_drainer_threads()) == before
        bus.stop()
        assert bus.stats()[:2] == (300, 0)
        return got

    assert asyncio.run(main()) == [f"req-{i}" for i in range(300)]


def test_the_first_publish_on_a_loop_waits_for_no_thread_to_start() -> None:
    # The loop watch's threading.Thread.start() waited for the new thread to run: up to 8.6 ms
    # of the first publish() on each loop, a worker's first request (trial 136). In a fresh
    # interpreter, where no watch runs yet.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio
        from eventbus_core._contract._waits import WaitSpy
        from eventbus_core.testing import make_event
        from eventbus_memory import InMemoryEventBus

        async def main():
            bus = InMemoryEventBus(100, publish_path="asyncio")
            spy = WaitSpy(thread_start_allowed=False)
            spy.run(bus.publish, make_event(0))
            await bus.astop()
            print(spy.found or "no wait")

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "no wait", done.stdout + done.stderr


def test_events_left_when_the_loop_ends_are_delivered_by_a_thread() -> None:
    bus = InMemoryEventBus(1000, linger=30.0)  # the loop's timer would not fire in time
    sub = bus.subscribe()

    async def main() -> None:
        for i in range(5):
            bus.publish(make_event(i))
        assert isinstance(bus._batcher._driver, LoopDriver)

    asyncio.run(main())  # ends with the 5 events still in the bus's buffer
    assert isinstance(bus._batcher._driver, ThreadDriver)
    assert bus.flush(timeout=5)
    assert [e.request_id for e in sub.get_batch()] == [f"req-{i}" for i in range(5)]
    bus.publish(make_event(5))  # a later loop-less publish still works
    assert bus.flush(timeout=5)
    assert sub.get(timeout=5).request_id == "req-5"
    bus.stop()
    assert _figures(bus.stats()) == (6, 0, 0)


def test_overflow_parked_for_a_full_subscriber_is_settled_before_the_loop_ends() -> None:
    # A full subscriber's overflow is parked for retries (1, 2, 4 ms). The loop's end waits
    # for those too: when asyncio.run() returns, each event is in the subscriber's delivered
    # or dropped, not in between (an outside trial saw 299-1,000 in no figure).
    bus = InMemoryEventBus(100, linger=30.0)
    sub = bus.subscribe()

    async def main() -> None:
        for i in range(100):
            bus.publish(make_event(i))
        assert bus.flush(timeout=5)  # the subscriber's buffer is full now
        for i in range(100, 200):
            bus.publish(make_event(i))  # left in the bus's buffer as the loop ends

    asyncio.run(main())
    figures = bus.stats().subscribers[0]
    assert (figures.delivered, figures.dropped) == (100, 100)
    assert bus.stats().lost == 0
    assert [e.request_id for e in sub.get_batch()] == [f"req-{i}" for i in range(100)]
    bus.stop()


def test_a_bus_made_before_the_loop_is_drained_by_the_loop_that_uses_it() -> None:
    bus = InMemoryEventBus(1000)  # module-level style: made before any loop runs
    bus.publish(make_event(0))  # an import-time publish: a thread drains it
    assert bus.flush(timeout=5)

    async def lifespan() -> int:
        sub = bus.subscribe()
        await asyncio.sleep(0.2)  # the thread falls into its deep sleep
        for i in range(1, 11):
            bus.publish(make_event(i))
        got = [e.request_id async for e in _take(sub, 10)]
        assert got == [f"req-{i}" for i in range(1, 11)]
        assert isinstance(bus._batcher._driver, LoopDriver)  # the loop took over
        bus.stop()  # on the loop: drains in place
        return sub.stats().delivered

    assert asyncio.run(lifespan()) == 10
    assert _figures(bus.stats()) == (11, 0, 0)


@pytest.mark.parametrize("path", ["auto", "asyncio"])
def test_a_loop_takes_over_from_a_thread_under_steady_traffic(path: str) -> None:
    # A sync endpoint's publish (the server's thread pool) came first, and the thread drainer
    # it started never slept deeply under steady traffic: the loop never took over, even with
    # EVENTBUS_PUBLISH_PATH=asyncio, whose warning says a thread drains "until a loop publishes".
    bus = InMemoryEventBus(10_000, linger=0.02, publish_path=path)
    sub = bus.subscribe(buffer_size=10_000)

    async def main() -> None:
        await asyncio.to_thread(bus.publish, make_event(0))
        assert isinstance(bus._batcher._driver, ThreadDriver)
        deadline = time.monotonic() + 1.0
        i = 1
        while time.monotonic() < deadline and not isinstance(bus._batcher._driver, LoopDriver):
            bus.publish(make_event(i))  # a steady 1 ms apart, well inside DEEP_SLEEP_AFTER
            i += 1
            await asyncio.sleep(0.001)
        assert isinstance(bus._batcher._driver, LoopDriver), f"still on a thread after {i}"
        assert i < 200  # within a few lingers (20 ms each), not by chance at the deadline
        await asyncio.to_thread(bus.stop)

    asyncio.run(main())
    assert _figures(bus.stats())[1:] == (0, 0)  # nothing refused or lost in the hand-over
    assert sub.stats().delivered == bus.stats().published


@pytest.mark.parametrize("path", ["asyncio", "thread", "auto-outside-a-loop"])
def test_a_buffer_of_one_wakes_its_drainer_at_each_event(path: str) -> None:
    # "Half full" of one event was never reached (depth 0 >= 1 before the append), so each
    # event waited for the linger timer, and 9 in 10 of those published 2 ms apart were refused.
    # 20 ms apart here, against a linger of 0.2 s: room for a busy machine to wake a thread.
    # Outside a loop, the thread drainer of the default path asks a publisher each linger
    # whether a loop would take over: that question must not swallow the wake a full buffer needs.
    outside = path == "auto-outside-a-loop"
    bus = InMemoryEventBus(1, linger=0.2, publish_path="auto" if outside else path)
    sub = bus.subscribe(buffer_size=1000)

    async def main() -> None:
        for i in range(40):
            bus.publish(make_event(i))
            await asyncio.sleep(0.02)
        await asyncio.to_thread(bus.stop)

    if outside:
        for i in range(40):
            bus.publish(make_event(i))
            time.sleep(0.02)
        bus.stop()
    else:
        asyncio.run(main())
    assert _figures(bus.stats()) == (40, 0, 0)
    assert sub.stats().delivered == 40


async def _take(sub: Subscription, n: int) -> Any:
    for _ in range(n):
        yield await sub.aget(timeout=5)


def test_stop_and_astop_on_the_loop_deliver_everything_accepted() -> None:
    async def main(use_astop: bool) -> tuple[int, int, int]:
        bus = InMemoryEventBus(10_000, linger=30.0)
        sub = bus.subscribe(buffer_size=10_000)
        for i in range(2_000):
            bus.publish(make_event(i))
        if use_astop:
            await bus.astop(timeout=5)
        else:
            bus.stop(timeout=5)
        stats = bus.stats()
        return stats.published, stats.lost, sub.qsize()

    assert asyncio.run(main(False)) == (2_000, 0, 2_000)
    assert asyncio.run(main(True)) == (2_000, 0, 2_000)


def test_publishes_from_threads_while_the_loop_drains() -> None:
    async def main() -> tuple[int, int]:
        bus = InMemoryEventBus(100_000)
        sub = bus.subscribe(buffer_size=100_000)
        bus.publish(make_event(-1))  # binds the loop

        def burst(base: int) -> None:
            for i in range(2_000):
                bus.publish(make_event(base + i))

        await asyncio.gather(*(asyncio.to_thread(burst, k * 10_000) for k in range(4)))
        assert await asyncio.to_thread(bus.flush, 5)
        assert isinstance(bus._batcher._driver, LoopDriver)
        bus.stop()
        return bus.stats().published, sub.qsize()

    assert asyncio.run(main()) == (8_001, 8_001)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_from_a_loop_gets_a_working_bus() -> None:
    async def main() -> int:
        bus = InMemoryEventBus(1000, linger=30.0)
        sub = bus.subscribe()
        bus.publish(make_event(0))  # still buffered at the fork: the parent's to deliver
        pid = os.fork()
        if pid == 0:  # the child: no loop runs here; publish() must work all the same
            code = 1
            try:
                bus.publish(make_event(1))
                ok = bus.flush(timeout=5) and sub.get(timeout=5).request_id == "req-1"
                stats = bus.stats()
                code = 0 if ok and _figures(stats) == (2, 0, 0) else 2
            finally:
                os._exit(code)
        code = await asyncio.to_thread(wait_child, pid)
        bus.stop()
        assert sub.get(timeout=5).request_id == "req-0"
        return code

    assert asyncio.run(main()) == 0


def test_publish_path_setting_reaches_the_memory_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_PUBLISH_PATH", "thread")
    bus = create_bus(EventBusSettings())
    assert isinstance(bus, InMemoryEventBus)

    async def main() -> None:
        bus.publish(make_event(0))

    asyncio.run(main())
    assert isinstance(bus._batcher._driver, ThreadDriver)  # a loop published, yet a thread
    bus.stop()
    monkeypatch.setenv("EVENTBUS_PUBLISH_PATH", "sideways")
    with pytest.raises(ValueError, match="EVENTBUS_PUBLISH_PATH"):
        EventBusSettings()


@pytest.mark.parametrize("end", ["closed", "stopped"])
def test_a_loop_closed_or_stopped_by_hand_hands_its_events_to_a_thread(end: str) -> None:
    # run_until_complete() returning, or loop.close(), cancels no task: the shutdown guard
    # never ran, and the drain timer armed on the dead loop never fired. 4,999 of 5,000
    # events never reached a consumer thread (helper-76).
    bus = InMemoryEventBus(10_000)
    sub = bus.subscribe()

    async def main() -> None:
        for i in range(5000):
            bus.publish(make_event(i))
            if i % 100 == 0:
                await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        if end == "closed":
            loop.close()
        got = [sub.get(timeout=5) for _ in range(5000)]  # no flush(), no stop()
        assert [e.request_id for e in got] == [f"req-{i}" for i in range(5000)]
        assert bus.stats().queue_depth == 0
    finally:
        bus.stop(5)
        loop.close()


def _fork_without_hooks() -> int:
    """fork() as uWSGI makes its workers: from C, no Python fork hook runs."""
    import ctypes

    return int(ctypes.PyDLL(None).fork())


@pytest.mark.parametrize("fork", [os.fork, _fork_without_hooks], ids=["os.fork", "no-hooks"])
def test_a_forked_child_watches_its_own_loops(fork: Any) -> None:
    # The watch thread is the parent's: a child whose loop stops with events must start its own
    # (also when the fork is found later, by check_fork(): the watch kept its dead thread).
    bus = InMemoryEventBus(10_000)
    loop = asyncio.new_event_loop()

    async def publish(n: int) -> None:
        for i in range(n):
            bus.publish(make_event(i))
            if i % 100 == 0:
                await asyncio.sleep(0)  # the rest wait for the drain timer, then the watch

    loop.run_until_complete(publish(10))  # the parent's watch runs from here on
    loop.close()
    assert bus.flush(5)

    def child_got() -> int:
        read, write = os.pipe()
        pid = fork()
        if pid == 0:  # the child: report how many its consumer thread got, without flush()
            try:
                check_fork()  # found now (as a wake would): the child's own state from here on
                sub = bus.subscribe()
                got = [0]

                def consume() -> None:
                    for _ in sub:
                        got[0] += 1

                threading.Thread(target=consume, daemon=True).start()
                child_loop = asyncio.new_event_loop()
                child_loop.run_until_complete(publish(500))
                deadline = time.monotonic() + 5
                while got[0] < 500 and time.monotonic() < deadline:
                    time.sleep(0.02)
                os.write(write, str(got[0]).encode())
            finally:
                os._exit(0)
        os.close(write)
        try:
            return int(read_from_child(read, pid, 100) or b"-1")
        finally:
            os.close(read)
            with contextlib.suppress(ChildProcessError):  # killed and reaped if it hung
                wait_child(pid)

    try:
        assert retried_if_hung(child_got) == 500
    finally:
        bus.stop(5)


def test_a_loop_takes_over_beside_threads_that_publish_more_often() -> None:
    # Only a linger's first publish was asked whether it ran on a loop: beside threads
    # publishing more often than the loop, the loop rarely made it, and a thread drained for
    # over a second (trial 223).
    bus = InMemoryEventBus(100_000, linger=0.02, publish_path="auto")
    done = threading.Event()

    def steady() -> None:
        i = 0
        while not done.is_set():
            bus.publish(make_event(i))
            i += 1
            time.sleep(0.0002)

    threads = [threading.Thread(target=steady) for _ in range(4)]
    for t in threads:
        t.start()

    async def main() -> int:
        await asyncio.sleep(0.05)
        assert isinstance(bus._batcher._driver, ThreadDriver)
        n = 0
        while n < 200 and not isinstance(bus._batcher._driver, LoopDriver):
            bus.publish(make_event(n))  # 1 ms apart: 200 are ten lingers
            n += 1
            await asyncio.sleep(0.001)
        return n

    try:
        n = asyncio.run(main())
    finally:
        done.set()
        for t in threads:
            t.join()
        bus.stop()
    assert n < 200, f"still on a thread after {n} loop publishes (ten lingers)"
