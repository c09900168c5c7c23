"""Testing aids: a recording bus for applications' tests, and the backend contract suite.

For application tests, `RecordingBus` replaces a real bus (the seed's hand-written mock, shipped):

    bus = RecordingBus()
    app = make_app(bus)
    ...
    bus.assert_published(path="/v1/chat/completions", status=200)

For backend authors, `BusContractTests` is the behavioural suite every backend passes:

    class TestMyBus(BusContractTests):
        def make_bus(self, buffer_size: int) -> EventBus:
            return MyBus(buffer_size=buffer_size)

pytest collects the inherited tests; override `settle()` if published events only become
visible to subscribers after a flush.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventbus_core._bus import BaseEventBus, EventBus, check_buffer_size
from eventbus_core._event import Event
from eventbus_core._stats import BusStats
from eventbus_core._subscription import Subscription, SubscriptionClosed

__all__ = ["BusContractTests", "RecordingBus", "make_event"]


def make_event(n: int = 0, **fields: Any) -> Event:
    """Build a realistic test event; `n` makes its request id unique (`req-<n>`)."""
    values: dict[str, Any] = {
        "request_id": f"req-{n}",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration": 150_000_000 + n,
        "response_headers": {"Content-Type": ["application/json"]},
        "response_body": b'{"id":"chatcmpl-1","usage":{"total_tokens":12}}',
        "request_body": b'{"model":"gpt-4o","messages":[]}',
    }
    values.update(fields)
    return Event(**values)


class RecordingBus(BaseEventBus):
    """An in-process bus that records every published event, for applications' unit tests.

    `published` holds every event in order. Subscriptions receive the events published after
    they were made, synchronously, so tests need no waiting.
    """

    def __init__(self, buffer_size: int = 100_000) -> None:
        self.published: list[Event] = []
        self.buffer_size = buffer_size
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._dropped = 0

    def publish(self, event: Event) -> None:
        """Record `event` and hand it to current subscribers."""
        with self._lock:
            if self._stopped:
                self._dropped += 1
                return
            self.published.append(event)
            for sub in self._subs:
                if not sub.offer([event]):
                    sub.count_dropped(1)

    def subscribe(self, name: str | None = None, *, buffer_size: int | None = None) -> Subscription:
        """Return a subscription to the events published from now on (its buffer holds
        `buffer_size` events, default the bus's)."""
        sub = Subscription(
            check_buffer_size(buffer_size, self.buffer_size), name=name, on_close=self._remove
        )
        with self._lock:
            if self._stopped:
                sub.finish()
            else:
                self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def stop(self, timeout: float | None = None) -> None:
        """End every subscription; later publishes are counted as dropped."""
        with self._lock:
            self._stopped = True
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.finish()

    def stats(self) -> BusStats:
        """`(published, dropped)`."""
        return BusStats(
            len(self.published), self._dropped, subscribers=tuple(s.stats() for s in self._subs)
        )

    def clear(self) -> None:
        """Forget the recorded events."""
        with self._lock:
            self.published.clear()

    def find(self, **fields: Any) -> list[Event]:
        """Return the recorded events whose attributes equal every given value."""
        return [e for e in self.published if all(getattr(e, k) == v for k, v in fields.items())]

    def assert_published(self, count: int | None = None, **fields: Any) -> list[Event]:
        """Assert that events matching `fields` were published (exactly `count`, if given).

        Returns the matching events.

        Raises:
            AssertionError: with the recorded events listed, when the expectation fails.
        """
        found = self.find(**fields)
        ok = len(found) == count if count is not None else bool(found)
        if not ok:
            want = f"{count} event(s)" if count is not None else "an event"
            recorded = "\n  ".join(repr(e) for e in self.published) or "(none)"
            raise AssertionError(
                f"expected {want} matching {fields}, found {len(found)}; recorded:\n  {recorded}"
            )
        return found

    def assert_nothing_published(self) -> None:
        """Assert that no event was published."""
        if self.published:
            raise AssertionError(
                f"expected no events, got {len(self.published)}: {self.published[:3]!r}"
            )


class BusContractTests:
    """The behavioural contract of an event bus, as a pytest test class to subclass.

    Implement `make_bus()`; override `settle()` when events need a flush to become visible.
    Every test stops the buses it makes.
    """

    receive_timeout: float = 10.0

    def make_bus(self, buffer_size: int) -> EventBus:
        """Return a new, running bus whose publish buffer holds `buffer_size` events."""
        raise NotImplementedError("subclasses of BusContractTests implement make_bus()")

    def settle(self, bus: EventBus) -> None:
        """Make every event published so far visible to subscribers (e.g. a flush)."""

    @contextmanager
    def bus(self, buffer_size: int = 1000) -> Iterator[EventBus]:
        """A bus that is stopped when the block ends."""
        bus = self.make_bus(buffer_size)
        try:
            yield bus
        finally:
            bus.stop()

    def receive(self, sub: Subscription, n: int) -> list[Event]:
        """Read exactly `n` events from `sub`, failing the test if they do not arrive."""
        got: list[Event] = []
        while len(got) < n:
            try:
                got.append(sub.get(timeout=self.receive_timeout))
            except TimeoutError:
                raise AssertionError(
                    f"received only {len(got)} of {n} events within {self.receive_timeout} s"
                ) from None
        return got

    # ------------------------------------------------------------------------------ tests

    def test_publish_then_subscriber_receives(self) -> None:
        with self.bus() as bus:
            sub = bus.subscribe()
            events = [make_event(i) for i in range(5)]
            for e in events:
                bus.publish(e)
            self.settle(bus)
            got = self.receive(sub, 5)
            assert [e.request_id for e in got] == [e.request_id for e in events]
            assert got[0].duration_ns == events[0].duration_ns
            assert got[0].response_body == events[0].response_body

    def test_fan_out_to_every_subscriber_in_order(self) -> None:
        with self.bus() as bus:
            subs = [bus.subscribe() for _ in range(3)]
            for i in range(50):
                bus.publish(make_event(i))
            self.settle(bus)
            for sub in subs:
                got = self.receive(sub, 50)
                assert [e.request_id for e in got] == [f"req-{i}" for i in range(50)]

    def test_stats_unpack_and_count_published(self) -> None:
        with self.bus() as bus:
            sub = bus.subscribe()
            for i in range(7):
                bus.publish(make_event(i))
            self.settle(bus)
            self.receive(sub, 7)
            published, dropped = bus.stats()
            assert (published, dropped) == (7, 0)

    def test_overflow_drops_and_counts_without_blocking(self) -> None:
        with self.bus(buffer_size=10) as bus:
            bus.subscribe()  # never read
            attempts = 5_000
            for i in range(attempts):
                bus.publish(make_event(i))
            self.settle(bus)
            published, dropped = bus.stats()
            assert published + dropped == attempts
            assert published >= 1

    def test_publish_after_stop_is_dropped_not_raised(self) -> None:
        bus = self.make_bus(100)
        bus.stop()
        bus.publish(make_event(1))
        published, dropped = bus.stats()
        assert (published, dropped) == (0, 1)

    def test_stop_is_idempotent_and_ends_iteration(self) -> None:
        bus = self.make_bus(100)
        sub = bus.subscribe()
        bus.stop()
        bus.stop()
        assert list(sub) == []

    def test_stop_delivers_accepted_events(self) -> None:
        bus = self.make_bus(1000)
        sub = bus.subscribe()
        for i in range(200):
            bus.publish(make_event(i))
        bus.stop()
        got = list(sub)  # ends because the bus stopped
        assert [e.request_id for e in got] == [f"req-{i}" for i in range(200)]

    def test_async_iteration(self) -> None:
        async def main() -> list[str]:
            bus = self.make_bus(100)
            sub = bus.subscribe()
            for i in range(10):
                bus.publish(make_event(i))
            self.settle(bus)
            got: list[str] = []
            async for event in sub:
                got.append(event.request_id)
                if len(got) == 10:
                    break
            await asyncio.to_thread(bus.stop)
            return got

        assert asyncio.run(main()) == [f"req-{i}" for i in range(10)]

    def test_async_iteration_ends_after_stop(self) -> None:
        async def main() -> int:
            bus = self.make_bus(100)
            sub = bus.subscribe()
            for i in range(3):
                bus.publish(make_event(i))
            stopper = asyncio.get_running_loop().run_in_executor(None, bus.stop)
            count = 0
            async for _ in sub:
                count += 1
            await stopper
            return count

        assert asyncio.run(main()) == 3

    def test_publish_from_inside_event_loop(self) -> None:
        async def main() -> None:
            bus = self.make_bus(100)
            sub = bus.subscribe()
            bus.publish(make_event(1))  # plain call from a coroutine: no await needed
            self.settle(bus)
            event = await sub.aget(timeout=self.receive_timeout)
            assert event.request_id == "req-1"
            await asyncio.to_thread(bus.stop)

        asyncio.run(main())

    def test_publish_from_many_threads_counts_exactly(self) -> None:
        with self.bus(buffer_size=100_000) as bus:
            sub = bus.subscribe()
            per_thread, threads = 500, 8
            barrier = threading.Barrier(threads)

            def worker(t: int) -> None:
                barrier.wait()
                for i in range(per_thread):
                    bus.publish(make_event(t * per_thread + i))

            pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
            for th in pool:
                th.start()
            for th in pool:
                th.join()
            self.settle(bus)
            total = per_thread * threads
            published, dropped = bus.stats()
            assert published + dropped == total
            got = self.receive(sub, published)
            assert len({e.request_id for e in got}) == published

    def test_closed_subscription_stops_receiving(self) -> None:
        with self.bus() as bus:
            keep = bus.subscribe()
            gone = bus.subscribe()
            gone.close()
            bus.publish(make_event(1))
            self.settle(bus)
            assert self.receive(keep, 1)[0].request_id == "req-1"
            try:
                gone.get(timeout=0)
            except SubscriptionClosed:
                pass
            else:
                raise AssertionError("a closed subscription still yielded an event")
