"""Contract tests of accounting: bounds hold, every event is counted once, stop() is bounded."""

from __future__ import annotations

import time

from eventbus_core._contract._base import ContractBase, make_event

__all__ = ["AccountingContract"]


class AccountingContract(ContractBase):
    """Where every event ends up, and how long `stop()` may take."""

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
        size, attempts = 10, 5_000
        with self.bus(buffer_size=size) as bus:
            sub = bus.subscribe()  # never read
            deepest = 0
            slowest = 0.0
            for i in range(attempts):
                event = make_event(i)
                began = time.perf_counter()
                bus.publish(event)
                slowest = max(slowest, time.perf_counter() - began)
                if i % 16 == 0:
                    deepest = max(deepest, bus.stats().queue_depth)
            assert slowest < self.publish_bound, (
                f"one publish() took {slowest:.3f} s with its buffer full: publish must drop "
                f"(and count) instead of waiting (bound: publish_bound = {self.publish_bound} s)"
            )
            self.settle(bus)
            running = bus.stats()
            assert running.published + running.dropped == attempts
            assert deepest <= size, f"the bus held {deepest} events with buffer_size={size}"
            assert sub.qsize() <= size, (
                f"a subscription of a bus with buffer_size={size} holds {sub.qsize()} events: "
                "its buffer must be bounded"
            )
        final = bus.stats()
        figures = self.entry(final, sub)
        assert final.published + final.dropped == attempts
        assert figures.delivered == sub.qsize(), "nothing was read: what was delivered is queued"
        self.assert_accounted(final, figures)
        missed = final.dropped + final.lost + figures.dropped
        assert missed > 0, f"{attempts} events through a buffer of {size}, and nothing was dropped"

    def test_no_drops_where_none_can_happen(self) -> None:
        size = 100
        with self.bus(buffer_size=size) as bus:
            sub = bus.subscribe()
            for i in range(size):  # exactly fills the bus's buffer, then the subscriber's
                bus.publish(make_event(i))
            self.settle(bus)
            got = self.receive(sub, size)
            for i in range(size, 4 * size):  # then keeps up, in steps the buffers hold
                bus.publish(make_event(i))
                if i % (size // 2) == size // 2 - 1:
                    self.settle(bus)
                    got += self.receive(sub, size // 2)
            assert [e.request_id for e in got] == [f"req-{i}" for i in range(4 * size)]
        final = bus.stats()
        assert (final.published, final.dropped, final.lost) == (4 * size, 0, 0)
        assert self.entry(final, sub).dropped == 0

    def test_slow_subscriber_misses_are_counted_for_it_alone(self) -> None:
        size = 50
        with self.bus(buffer_size=size) as bus:
            fast = bus.subscribe("contract-fast")
            slow = bus.subscribe("contract-slow")  # never reads
            for chunk in range(8):  # chunks of half the buffer: the bus itself never overflows
                for i in range(chunk * 25, chunk * 25 + 25):
                    bus.publish(make_event(i))
                self.settle(bus)
                got = self.receive(fast, 25)
                assert got[-1].request_id == f"req-{chunk * 25 + 24}"
        final = bus.stats()
        assert (final.published, final.dropped, final.lost) == (200, 0, 0), (
            "a slow subscriber's misses are its own, not the bus's: "
            f"published={final.published} dropped={final.dropped} lost={final.lost}"
        )
        fast_figures, slow_figures = self.entry(final, fast), self.entry(final, slow)
        assert (fast_figures.delivered, fast_figures.dropped) == (200, 0)
        assert (slow_figures.delivered, slow_figures.dropped) == (size, 200 - size)

    def test_stop_is_bounded_with_a_stuck_consumer(self) -> None:
        bus = self.make_bus(10)
        sub = bus.subscribe()  # never reads: its buffer fills, and then the bus's
        for i in range(2_000):
            bus.publish(make_event(i))
        self.stop_bus(bus, timeout=1.0)
        assert len(list(sub)) <= 10  # iteration ends once the buffered events are read
        final = bus.stats()
        assert final.published + final.dropped == 2_000
        self.assert_accounted(final, self.entry(final, sub))

    def test_publish_after_stop_is_dropped_not_raised(self) -> None:
        bus = self.make_bus(100)
        self.stop_bus(bus)
        bus.publish(make_event(1))
        published, dropped = bus.stats()
        assert (published, dropped) == (0, 1)

    def test_published_and_dropped_never_go_down(self) -> None:
        bus = self.make_bus(1000)
        sub = bus.subscribe()
        history = []
        for i in range(600):
            bus.publish(make_event(i))
            if i % 50 == 0:
                history.append(bus.stats())
        history.append(bus.stats())
        self.stop_bus(bus, timeout=0.0)  # too short to deliver everything: some may be lost
        history.append(bus.stats())
        bus.publish(make_event(600))
        history.append(bus.stats())
        published = [s.published for s in history]
        dropped = [s.dropped for s in history]
        assert published == sorted(published), f"published went down: {published}"
        assert dropped == sorted(dropped), f"dropped went down: {dropped}"
        final = history[-1]
        assert final.published + final.dropped == 601
        assert final.published == history[-2].published  # nothing is accepted after stop()
        self.assert_accounted(final, self.entry(final, sub))
