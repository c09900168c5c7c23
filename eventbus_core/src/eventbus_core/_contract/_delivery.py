"""Contract tests of delivery: order, fan-out, the subscribe cut, flush, stop, async use."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import unittest
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from eventbus_core._bus import EventBus
from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core._contract._bounded import Watch, run_watched
from eventbus_core._event import Event
from eventbus_core._subscription import Subscription, SubscriptionClosed
from eventbus_core.capabilities import Buffered, Flushable, capability

__all__ = ["DeliveryContract"]

T = TypeVar("T")


def _ids(events: Iterable[Event]) -> list[str]:
    return [e.request_id for e in events]


class DeliveryContract(ContractBase):
    """What subscribers receive, and when."""

    async def within(
        self,
        step: Awaitable[T],
        failure: str | Callable[[], str],
        seconds: float | None = None,
        knob: str = "receive_timeout",
    ) -> T:
        """Await `step`, failing the test with `failure` (a callable: made when it fails, so
        that it can say how far the step got) after `seconds` (`receive_timeout`)."""
        wait = self.receive_timeout if seconds is None else seconds
        try:
            return await asyncio.wait_for(step, wait)
        except TimeoutError:
            text = failure() if callable(failure) else failure
            raise AssertionError(f"{text} within {wait:g} s ({knob})") from None

    def test_publish_then_subscriber_receives(self) -> None:
        with self.bus() as bus:
            sub = self.subscribe_bounded(bus)
            events = [make_event(i) for i in range(5)]
            self.publish_each(bus, events)
            self.settle_bounded(bus)
            got = self.receive(sub, 5)
            assert _ids(got) == _ids(events), f"received {_ids(got)}, published {_ids(events)}"
            assert got[0].duration_ns == events[0].duration_ns, (
                f"duration_ns {events[0].duration_ns} came back as {got[0].duration_ns}"
            )
            assert got[0].response_body == events[0].response_body, (
                f"response_body {events[0].response_body!r} came back as {got[0].response_body!r}"
            )

    def test_fan_out_to_every_subscriber_in_order(self) -> None:
        with self.bus() as bus:
            subs = [self.subscribe_bounded(bus) for _ in range(3)]
            self.publish_each(bus, (make_event(i) for i in range(50)))
            self.settle_bounded(bus)
            expected = [f"req-{i}" for i in range(50)]
            for n, sub in enumerate(subs):
                got = _ids(self.receive(sub, 50))
                assert got == expected, f"subscriber #{n} received {got}, expected {expected}"

    def test_only_events_published_after_subscribe_are_delivered(self) -> None:
        # In process, a burst right before subscribe(), in the same thread, is likely still in
        # the bus's buffer when the subscription starts: one that started at the buffer's head
        # got those events too, which 5 events published from another thread seldom showed
        # (the bus had handed them on meanwhile).
        burst = 500
        with self.bus(buffer_size=10_000) as bus:
            early = self.subscribe_bounded(bus)
            self.publish_each(bus, (make_event(i) for i in range(5)))
            self.settle_bounded(bus)
            before = [make_event(i) for i in range(5, 5 + burst)]
            if self.is_in_process(bus):
                late = self._publish_then_subscribe(bus, before)
            else:
                self.publish_each(bus, before)
                # A networked subscription starts at what the backend holds now.
                self.settle_bounded(bus)
                late = self.subscribe_bounded(bus)
            first = 5 + burst
            self.publish_each(bus, (make_event(i) for i in range(first, first + 5)))
            self.settle_bounded(bus)
            got = _ids(self.receive(late, 5))
            expected = [f"req-{i}" for i in range(first, first + 5)]
            early_ids = {f"req-{i}" for i in range(first)}
            if any(i in early_ids for i in got):
                why = "events published before subscribe() was called"
            elif sorted(got) == sorted(expected):
                why = "the events out of the order they were published in"
            else:
                why = "not the events published after subscribe()"
            assert got == expected, f"a subscription received {got[:8]}: {why}, expected {expected}"
            total = first + 5
            early_got = len(self.receive(early, total))
            assert early_got == total, (
                f"the first subscriber received {early_got} of {total} events"
            )

    def _publish_then_subscribe(self, bus: EventBus, events: list[Event]) -> Subscription:
        """Publish `events`, then subscribe at once in the same thread, each call bounded."""

        def body(watch: Watch) -> Subscription:
            bound = self.publish_limit()
            for event in events:
                watch.call(bound, bus.publish, event)
            return watch.call(self.call_limit("subscribe()"), bus.subscribe)

        return run_watched(body, self.publishes_limit(len(events) + 1))

    def test_flush_makes_every_accepted_event_visible(self) -> None:
        with self.bus(buffer_size=10_000) as bus:
            flushable = capability(bus, Flushable)
            if flushable is None:
                raise unittest.SkipTest("the bus offers no flush() (capability Flushable)")
            in_process = self.is_in_process(bus)
            subs = [self.subscribe_bounded(bus) for _ in range(10)]
            for round_ in range(10):
                sent = [f"req-{i}" for i in range(round_ * 200, round_ * 200 + 200)]
                self.publish_each(
                    bus, (make_event(i) for i in range(round_ * 200, round_ * 200 + 200))
                )
                flushed = self.flush_bounded(flushable, self.receive_timeout)
                assert flushed is True, (
                    f"flush({self.receive_timeout:g}) returned {flushed!r} for 200 events: "
                    "it timed out"
                )
                if in_process:
                    # In one process, flush() returns once every accepted event is in every
                    # subscriber's buffer: nothing may still be on its way.
                    held = [s.qsize() for s in subs]
                    over = [n for n in held if n > 200]
                    assert not over, (
                        f"{len(over)} subscriber(s) held {over[:5]} events after flush(), of the "
                        "200 published before it: some were delivered twice"
                    )
                    short = [n for n in held if n != 200]
                    assert not short, (
                        f"flush() returned True while {len(short)} subscriber(s) held only "
                        f"{short[:5]} of the 200 events published before it"
                    )
                # Whatever the transport, what flush() settled is before a new subscription's
                # start: it receives the next event first, none of the flushed ones.
                probe = self.subscribe_bounded(bus)
                marker = make_event(100_000 + round_)
                self.publish_each(bus, [marker])
                self.settle_bounded(bus)
                first = self.receive(probe, 1)[0].request_id
                assert first == marker.request_id, (
                    f"a subscription made after flush() returned True received {first}, "
                    "published before it: flush() returned before that event was settled"
                )
                self.close_bounded(probe)
                for n, sub in enumerate(subs):
                    got = _ids(self.receive(sub, 201))
                    assert got == [*sent, marker.request_id], (
                        f"round {round_}, subscriber #{n}: received {got[:3]}...{got[-3:]}, "
                        f"expected {sent[0]} to {sent[-1]}, then {marker.request_id}"
                    )
            figures = tuple(self.stats_bounded(bus))
            assert figures == (2_010, 0), f"(published, dropped) = {figures}, expected (2010, 0)"

    def test_stop_is_idempotent_and_ends_iteration(self) -> None:
        with self.bus(100) as bus:
            sub = self.subscribe_bounded(bus)
            self.stop_bus(bus)
            self.stop_bus(bus)
            got = self.drain(sub)
            assert got == [], f"a subscription of a bus that got no events yielded {_ids(got)}"

    def test_subscribe_after_stop_ends_at_once(self) -> None:
        # A subscription made on a stopped bus gets nothing and has ended already: a consumer
        # started late (or restarted in a loop) must not wait for events that cannot come.
        with self.bus(100) as bus:
            self.stop_bus(bus)
            sub = self.subscribe_bounded(bus)
            got = self.drain(sub)
            assert got == [], f"a subscription made after stop() yielded {_ids(got)}"

    def test_stop_delivers_accepted_events(self) -> None:
        with self.bus(1000) as bus:
            sub = self.subscribe_bounded(bus)
            self.publish_each(bus, (make_event(i) for i in range(200)))
            self.stop_bus(bus)
            got = _ids(self.drain(sub))  # ends because the bus stopped
        expected = [f"req-{i}" for i in range(200)]
        assert got == expected, (
            f"after stop(), the subscriber read {len(got)} events "
            f"({got[:3]}...{got[-3:]}), expected the 200 accepted, req-0 to req-199"
        )

    def test_async_iteration(self) -> None:
        async def main(watch: Watch, made: list[EventBus]) -> list[str]:
            bus = self.make_bus(100)
            made.append(bus)  # stopped by run_async if this fails before its own stop
            sub = watch.call(self.call_limit("subscribe()"), bus.subscribe)
            publish = self.publish_limit()
            for i in range(10):
                watch.call(publish, bus.publish, make_event(i))
            watch.call(self.settle_limit(), self.settle, bus)
            got: list[str] = []

            async def read() -> None:
                async for event in sub:
                    got.append(event.request_id)
                    if len(got) == 10:
                        break

            await self.within(read(), lambda: f"async for received only {len(got)} of 10 events")
            await asyncio.to_thread(self.stop_bus, bus)
            return got

        got = self.run_async(main, "test_async_iteration's event loop")
        assert got == [f"req-{i}" for i in range(10)], f"async for received {got}"

    def test_async_iteration_ends_after_stop(self) -> None:
        async def main(watch: Watch, made: list[EventBus]) -> int:
            bus = self.make_bus(100)
            made.append(bus)
            sub = watch.call(self.call_limit("subscribe()"), bus.subscribe)
            publish = self.publish_limit()
            for i in range(3):
                watch.call(publish, bus.publish, make_event(i))
            stopper = asyncio.get_running_loop().run_in_executor(None, self.stop_bus, bus)
            count = 0

            async def read() -> None:
                nonlocal count
                async for _ in sub:
                    count += 1

            try:
                await self.within(read(), "async for did not end after stop()")
            except BaseException as failure:
                # The stop's own outcome belongs to this report: left unawaited, a failed stop
                # is printed by asyncio at exit, outside pytest's report, as a future whose
                # exception was never retrieved.
                try:
                    await stopper
                except Exception as exc:
                    failure.add_note(f"And stop() failed: {exc}")
                raise
            await stopper
            return count

        count = self.run_async(main, "test_async_iteration_ends_after_stop's event loop")
        assert count == 3, f"async for read {count} events before it ended, expected 3"

    def test_publish_from_inside_event_loop(self) -> None:
        async def main(watch: Watch, made: list[EventBus]) -> None:
            bus = self.make_bus(100)
            made.append(bus)
            sub = watch.call(self.call_limit("subscribe()"), bus.subscribe)
            # A plain call from a coroutine, on the loop's thread: no await needed.
            watch.call(self.publish_limit(), bus.publish, make_event(1))
            watch.call(self.settle_limit(), self.settle, bus)
            wait = self.receive_timeout
            event = await self.within(
                sub.aget(timeout=wait),
                f"aget(timeout={wait:g}) neither returned nor raised TimeoutError",
                wait + self.stop_slack,
                "receive_timeout + stop_slack",
            )
            assert event.request_id == "req-1", f"aget() gave {event.request_id}, not req-1"
            await asyncio.to_thread(self.stop_bus, bus)

        self.run_async(main, "test_publish_from_inside_event_loop's event loop")

    def test_publish_from_many_threads_counts_exactly(self) -> None:
        with self.bus(buffer_size=100_000) as bus:
            sub = self.subscribe_bounded(bus)
            published = self._counted_from_threads(bus, 500, "")
            got = self.receive(sub, published)
            unique = len({e.request_id for e in got})
            assert unique == published, (
                f"{published} events accepted, but the subscriber received {unique} distinct "
                f"ones among the first {published} it read: "
                f"{published - unique} of those were events it had received before (delivered "
                "twice), and as many accepted events had not come by then"
            )

    def test_a_burst_of_buffer_size_events_is_taken_whole(self) -> None:
        # `Buffered.buffer_size` is what publish() holds before it drops: `eventbus publish`
        # waits for flush() every half of it, so a bus holding less drops a file's events.
        with self.bus(buffer_size=64) as bus:
            buffered = capability(bus, Buffered)
            if buffered is None:
                raise unittest.SkipTest("the bus offers no buffer_size (capability Buffered)")
            size = buffered.buffer_size
            assert isinstance(size, int) and not isinstance(size, bool) and size > 0, (
                f"buffer_size is {size!r}: it must be the number of events publish() holds"
            )
            burst = min(size, 10_000)
            self.publish_each(bus, (make_event(i) for i in range(burst)))
            self.settle_bounded(bus)
            published, dropped = self.stats_bounded(bus)[:2]
            assert (published, dropped) == (burst, 0), (
                f"{burst} events published in a row into an idle bus whose buffer_size is "
                f"{size}: published {published}, dropped {dropped}; publish() must hold "
                "buffer_size events before it drops"
            )

    def test_refusals_from_many_threads_count_exactly(self) -> None:
        # A buffer of 10 under 8 publishing threads: most calls are refused, concurrently, so a
        # refusal count kept without a lock (or an atomic counter) comes out short. The calls
        # are made back to back, with Python switching threads every 5 µs: each one wrapped in
        # the watch (two lock round trips) kept the threads apart, and a count short by a third
        # passed (trial 245). The run as a whole is still bounded.
        with self.bus(buffer_size=10) as bus:
            self._counted_from_threads(bus, 1500, " into a buffer of 10", close_together=True)

    def _counted_from_threads(
        self, bus: EventBus, per_thread: int, into: str, *, close_together: bool = False
    ) -> int:
        """Publish `per_thread` events from each of 8 threads; check that `published` and
        `dropped` add up to the calls once the bus settled; return `published`."""
        total = self._publish_from_threads(bus, per_thread, 8, close_together=close_together)
        self.settle_bounded(bus)
        published, dropped = self.stats_bounded(bus)
        assert published + dropped == total, (
            f"{total} publish() calls from 8 threads{into}, but published {published} + "
            f"dropped {dropped} = {published + dropped}"
        )
        return published

    def _publish_from_threads(
        self, bus: EventBus, per_thread: int, threads: int, *, close_together: bool = False
    ) -> int:
        """`per_thread` publish() calls from each of `threads` threads started together; return
        the number of calls. Each call is bounded (`publish_bound`); or, `close_together`, the
        calls are made back to back, with no per-call bound (the whole run has one), while
        Python switches threads as often as it can."""
        total = per_thread * threads
        limit, bound = self.publishes_limit(total), self.publish_limit()
        batches = [[make_event(t * per_thread + i) for i in range(per_thread)]
                   for t in range(threads)]  # fmt: skip

        def run(watch: Watch) -> None:
            barrier = threading.Barrier(threads)
            errors: list[BaseException] = []

            def worker(events: list[Event]) -> None:
                try:
                    barrier.wait(limit.seconds)
                except threading.BrokenBarrierError:
                    return  # another worker failed first: its error is the one to report
                try:
                    if close_together:
                        publish = bus.publish
                        for event in events:
                            publish(event)
                    else:
                        for event in events:
                            watch.call(bound, bus.publish, event)
                except BaseException as exc:  # re-raised below, in the watched thread
                    errors.append(exc)

            pool = [threading.Thread(target=worker, args=(b,), daemon=True) for b in batches]
            deadline = time.monotonic() + limit.seconds  # one for all the joins
            for th in pool:
                th.start()
            for th in pool:
                # The watch fails the test first if a publish() hangs; this thread is then
                # abandoned (a daemon), as are the workers.
                th.join(max(0.0, deadline - time.monotonic()))
            if errors:
                exc = errors[0]
                if isinstance(exc, Exception) and not isinstance(exc, AssertionError):
                    # Raised outside the watch (back to back): said as the watch says it.
                    raise AssertionError(
                        f"publish() raised {type(exc).__name__}: {exc}: {bound.never_raises}"
                    ) from exc
                raise exc

        if not close_together:
            run_watched(run, limit)
            return total
        # Set and put back here, in the test's own thread: a run that overruns its bound is
        # abandoned while its threads still join, and left the whole process switching every
        # 5 µs (review 252).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(5e-6)
        try:
            run_watched(run, limit)
        finally:
            sys.setswitchinterval(interval)
        return total

    def test_closed_subscription_stops_receiving(self) -> None:
        with self.bus() as bus:
            keep = self.subscribe_bounded(bus)
            gone = self.subscribe_bounded(bus)
            self.close_bounded(gone)
            self.publish_each(bus, [make_event(1)])
            self.settle_bounded(bus)
            first = self.receive(keep, 1)[0].request_id
            assert first == "req-1", f"the open subscription received {first}, not req-1"
            try:
                got = self.bounded(
                    self.timed_limit("get(timeout=0) of a closed subscription", 0, "its timeout"),
                    gone.get,
                    timeout=0,
                )
            except SubscriptionClosed:
                pass
            else:
                raise AssertionError(f"a closed subscription still yielded {got.request_id}")
