"""Contract tests of delivery: order, fan-out, the subscribe cut, flush, stop, async use."""

from __future__ import annotations

import asyncio
import threading
import unittest
from collections.abc import Coroutine, Iterable
from typing import Any

from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core._event import Event
from eventbus_core._subscription import SubscriptionClosed
from eventbus_core.capabilities import Flushable, capability

__all__ = ["DeliveryContract"]


def _ids(events: Iterable[Event]) -> list[str]:
    return [e.request_id for e in events]


class DeliveryContract(ContractBase):
    """What subscribers receive, and when."""

    async def within(self, step: Coroutine[Any, Any, None], failure: str) -> None:
        """Await `step`, failing the test with `failure` after `receive_timeout` seconds."""
        try:
            await asyncio.wait_for(step, self.receive_timeout)
        except TimeoutError:
            raise AssertionError(f"{failure} within {self.receive_timeout} s") from None

    def test_publish_then_subscriber_receives(self) -> None:
        with self.bus() as bus:
            sub = bus.subscribe()
            events = [make_event(i) for i in range(5)]
            for e in events:
                bus.publish(e)
            self.settle(bus)
            got = self.receive(sub, 5)
            assert _ids(got) == _ids(events)
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
                assert _ids(got) == [f"req-{i}" for i in range(50)]

    def test_only_events_published_after_subscribe_are_delivered(self) -> None:
        with self.bus() as bus:
            early = bus.subscribe()
            for i in range(5):
                bus.publish(make_event(i))
            self.settle(bus)
            for i in range(5, 10):
                bus.publish(make_event(i))  # in-process: possibly still in the bus's buffer
            if not self.is_in_process(bus):
                # A networked subscription starts at what the backend holds now.
                self.settle(bus)
            late = bus.subscribe()
            for i in range(10, 15):
                bus.publish(make_event(i))
            self.settle(bus)
            got = self.receive(late, 5)
            assert _ids(got) == [f"req-{i}" for i in range(10, 15)], (
                "a subscription received events published before subscribe() was called"
            )
            assert len(self.receive(early, 15)) == 15

    def test_flush_makes_every_accepted_event_visible(self) -> None:
        with self.bus(buffer_size=10_000) as bus:
            flushable = capability(bus, Flushable)
            if flushable is None:
                raise unittest.SkipTest("the bus offers no flush() (capability Flushable)")
            in_process = self.is_in_process(bus)
            subs = [bus.subscribe() for _ in range(10)]
            for round_ in range(10):
                sent = [f"req-{i}" for i in range(round_ * 200, round_ * 200 + 200)]
                for i in range(round_ * 200, round_ * 200 + 200):
                    bus.publish(make_event(i))
                assert flushable.flush(self.receive_timeout) is True, "flush() timed out"
                if in_process:
                    # In one process, flush() returns once every accepted event is in every
                    # subscriber's buffer: nothing may still be on its way.
                    short = [s.qsize() for s in subs if s.qsize() != 200]
                    assert not short, (
                        f"flush() returned True while {len(short)} subscriber(s) held only "
                        f"{short[:5]} of the 200 events published before it"
                    )
                # Whatever the transport, what flush() settled is before a new subscription's
                # start: it receives the next event first, none of the flushed ones.
                probe = bus.subscribe()
                marker = make_event(100_000 + round_)
                bus.publish(marker)
                self.settle(bus)
                first = self.receive(probe, 1)[0].request_id
                assert first == marker.request_id, (
                    f"a subscription made after flush() returned True received {first}, "
                    "published before it: flush() returned before that event was settled"
                )
                probe.close()
                for sub in subs:
                    assert _ids(self.receive(sub, 201)) == [*sent, marker.request_id]
            assert tuple(bus.stats()) == (2_010, 0)

    def test_stop_is_idempotent_and_ends_iteration(self) -> None:
        bus = self.make_bus(100)
        sub = bus.subscribe()
        self.stop_bus(bus)
        self.stop_bus(bus)
        assert self.drain(sub) == []

    def test_stop_delivers_accepted_events(self) -> None:
        bus = self.make_bus(1000)
        sub = bus.subscribe()
        for i in range(200):
            bus.publish(make_event(i))
        self.stop_bus(bus)
        got = self.drain(sub)  # ends because the bus stopped
        assert _ids(got) == [f"req-{i}" for i in range(200)]

    def test_async_iteration(self) -> None:
        async def main() -> list[str]:
            bus = self.make_bus(100)
            sub = bus.subscribe()
            for i in range(10):
                bus.publish(make_event(i))
            self.settle(bus)
            got: list[str] = []

            async def read() -> None:
                async for event in sub:
                    got.append(event.request_id)
                    if len(got) == 10:
                        break

            try:
                await self.within(read(), f"async for received only {len(got)} of 10 events")
            finally:
                await asyncio.to_thread(self.stop_bus, bus)
            return got

        assert asyncio.run(main()) == [f"req-{i}" for i in range(10)]

    def test_async_iteration_ends_after_stop(self) -> None:
        async def main() -> int:
            bus = self.make_bus(100)
            sub = bus.subscribe()
            for i in range(3):
                bus.publish(make_event(i))
            stopper = asyncio.get_running_loop().run_in_executor(None, self.stop_bus, bus)
            count = 0

            async def read() -> None:
                nonlocal count
                async for _ in sub:
                    count += 1

            await self.within(read(), "async for did not end after stop()")
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
            await asyncio.to_thread(self.stop_bus, bus)

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
