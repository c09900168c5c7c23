"""Plumbing of the backend contract suite: the knobs, the bus factory and bounded helpers.

The tests themselves are in `_delivery.py` and `_accounting.py`; backends
subclass `eventbus_core.testing.BusContractTests`, which combines them.

Every call into the bus under test goes through a helper here that bounds it (`_bounded.py`):
a broken backend fails the test that meets its defect, within the knobs' seconds, with a
message naming the call and the knob, instead of hanging the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from eventbus_core._bus import EventBus
from eventbus_core._contract._bounded import Bound, Watch, run_watched
from eventbus_core._event import Event
from eventbus_core._stats import BusStats, SubscriberStats
from eventbus_core._subscription import Subscription, SubscriptionClosed
from eventbus_core.capabilities import Flushable, capability, is_cross_process

__all__ = ["ContractBase", "make_event"]

T = TypeVar("T")

_END = object()  # next(iterator, _END): the iteration ended
_PUBLISH_MUST = (
    "publish() must buffer the event or drop (and count) it, never wait for room or for a server"
)


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


class ContractBase:
    """Knobs and helpers shared by the contract tests (see `BusContractTests`)."""

    receive_timeout: float = 10.0
    stop_timeout: float = 5.0
    stop_slack: float = 3.0
    # Seconds `stop(1.0)` may take beyond its timeout in `test_stop_is_bounded_with_a_stuck_
    # consumer`, which times it (and `stop(0.1)` in `test_a_short_stop_keeps_to_its_timeout`):
    # `stop_slack` only tells a stop that hangs from one that returns, and a stop 2.5 s late
    # passed the suite (trials 176 and 185). Room for a loaded
    # machine, not for a stop that waits past its timeout; at `stop_slack` or more it adds
    # nothing (the call is failed as hung first).
    stop_overshoot: float = 1.0
    # The slowest single publish() call the suite accepts. publish() must not wait for I/O or
    # for room in a buffer; this bound is generous (a GC pause or a machine loaded several
    # times over fits in it: 0.35 s was seen at a load of 7 on 2 cores) and a publish that
    # waits out a socket timeout under a fault does not.
    publish_bound: float = 1.0
    # The longest wait of one publish() for a lock another thread holds: a worker holds its
    # locks for microseconds; one held through a write (0.3 s in trial 213) is publish()
    # waiting on I/O. Seen twice in a row, as a holder a loaded machine stopped is once.
    lock_wait_bound: float = 0.1
    # Seconds an event may take more, on average over a few, to reach a subscriber that reads
    # while another one is full than while it has room (one at a time, each waited for).
    hand_over_bound: float = 0.2
    in_process: bool | None = None
    # The buses whose stop() this test has called (or tried): the end of `bus()` stops the
    # others only, so a stop() that hangs costs its bound once per bus, not twice. Set on the
    # instance, never the class: pytest makes an instance per test, so nothing of a failed
    # test's buses is seen by the next test.
    _contract_stopped: list[EventBus]

    def make_bus(self, buffer_size: int) -> EventBus:
        """Return a new, running bus whose publish buffer holds `buffer_size` events, and whose
        subscriptions each buffer at most `buffer_size` events."""
        raise NotImplementedError("subclasses of BusContractTests implement make_bus()")

    def settle(self, bus: EventBus) -> None:
        """Make every event published so far visible to subscribers: `flush()` for a bus that
        offers it (`Flushable`), nothing otherwise. Override if your bus needs something else.
        The suite waits `receive_timeout + stop_slack` seconds at most for it."""
        flushable = capability(bus, Flushable)
        if flushable is not None:
            wait = self.receive_timeout
            assert flushable.flush(wait), (
                f"flush({wait:g}) returned False: it did not finish within {wait:g} s "
                "(receive_timeout)"
            )

    def is_in_process(self, bus: EventBus) -> bool:
        """The `in_process` knob, or else: True unless the bus says it is `CrossProcess`."""
        if self.in_process is not None:
            return self.in_process
        return not is_cross_process(bus)

    # ------------------------------------------------------------------------------ bounds

    def publish_limit(self, why: str = "") -> Bound:
        """The bound of one `publish()` call."""
        return Bound(
            "publish()",
            self.publish_bound,
            "publish_bound",
            why or _PUBLISH_MUST,
            never_raises=(
                "publish() must never raise because the backend is unhappy: refuse the event "
                "and count it as dropped instead"
            ),
        )

    def publishes_limit(self, n: int) -> Bound:
        """The bound of `n` publish() calls in a row (each also bounded by `publish_limit`)."""
        return Bound(
            f"{n} publish() calls",
            self.receive_timeout + self.publish_bound,
            "receive_timeout + publish_bound",
            "publish() must return at once, every time",
            verb="did not finish",
        )

    def call_limit(self, what: str, why: str = "") -> Bound:
        """The bound of a call with no timeout of its own (`subscribe()`, `stats()`, ...)."""
        return Bound(what, self.receive_timeout, "receive_timeout", why)

    def timed_limit(self, what: str, timeout: float, knob: str, why: str = "") -> Bound:
        """The bound of a call given `timeout` (by the knob `knob`): `timeout + stop_slack`."""
        return Bound(what, timeout + self.stop_slack, f"{knob} + stop_slack", why)

    def settle_limit(self) -> Bound:
        return self.timed_limit(
            "settle() (flush() by default)",
            self.receive_timeout,
            "receive_timeout",
            "flush(timeout) must return, False if need be, once its timeout has passed",
        )

    def get_limit(self) -> Bound:
        return self.timed_limit(
            f"get(timeout={self.receive_timeout:g})",
            self.receive_timeout,
            "receive_timeout",
            "get(timeout) must raise TimeoutError once its timeout has passed",
        )

    def async_limit(self, what: str) -> Bound:
        """A backstop for an async test: its own waits are bounded one by one, but a call
        that blocks the event loop outside them would stop those bounds from firing."""
        return Bound(
            what,
            2 * (self.receive_timeout + self.stop_timeout + self.stop_slack),
            "2 * (receive_timeout + stop_timeout + stop_slack)",
            "a call into the bus blocked the event loop",
            verb="did not finish",
        )

    # ----------------------------------------------------------------------- bounded calls

    def bounded(self, bound: Bound, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a daemon thread, failing the test if it has not returned
        within `bound`."""
        return run_watched(lambda watch: watch.call(bound, fn, *args, **kwargs))

    def call_within(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, failing the test as `what` if it has not returned within
        `receive_timeout` s: for calls with no timeout of their own."""
        return self.bounded(self.call_limit(what), fn, *args, **kwargs)

    def publish_each(self, bus: EventBus, events: Iterable[Event]) -> None:
        """`bus.publish()` each event in turn, each call within `publish_bound` s."""
        batch = list(events)

        def publish(watch: Watch) -> None:
            bound = self.publish_limit()
            for event in batch:
                watch.call(bound, bus.publish, event)

        run_watched(publish, self.publishes_limit(len(batch)))

    def subscribe_bounded(
        self, bus: EventBus, name: str | None = None, *, buffer_size: int | None = None
    ) -> Subscription:
        """`bus.subscribe(name, buffer_size=...)`, within `receive_timeout` s."""
        # Only the arguments given, as a caller would pass them.
        args = () if name is None else (name,)
        kwargs = {} if buffer_size is None else {"buffer_size": buffer_size}
        return self.bounded(self.call_limit("subscribe()"), bus.subscribe, *args, **kwargs)

    def stats_bounded(self, bus: EventBus) -> BusStats:
        """`bus.stats()`, within `receive_timeout` s."""
        return self.bounded(self.call_limit("stats()"), bus.stats)

    def close_bounded(self, sub: Subscription) -> None:
        """`sub.close()`, within `receive_timeout` s."""
        self.bounded(self.call_limit("Subscription.close()"), sub.close)

    def settle_bounded(self, bus: EventBus) -> None:
        """`self.settle(bus)` (the hook), within `receive_timeout + stop_slack` s."""
        self.bounded(self.settle_limit(), self.settle, bus)

    def flush_bounded(
        self, flushable: Flushable, timeout: float, knob: str = "receive_timeout"
    ) -> bool:
        """`flush(timeout)` (`timeout` set by the knob `knob`), within `timeout + stop_slack` s."""
        return self.bounded(
            self.timed_limit(
                f"flush(timeout={timeout:g})",
                timeout,
                knob,
                "flush(timeout) must return, False if need be, once its timeout has passed",
            ),
            flushable.flush,
            timeout,
        )

    # --------------------------------------------------------------------- making, stopping

    @contextmanager
    def bus(self, buffer_size: int = 1000) -> Iterator[EventBus]:
        """A bus that is stopped (within the bound of `stop_bus()`) when the block ends, unless
        the block stopped it."""
        with self.stopping(self.make_bus(buffer_size)) as bus:
            yield bus

    @contextmanager
    def stopping(self, bus: EventBus, timeout: float | None = None) -> Iterator[EventBus]:
        """Stop `bus` (`stop_bus(bus, timeout)`) when the block ends, unless the block called
        `stop_bus()` on it. When the block failed, a failure to stop is added to the block's
        own failure as a note instead of replacing it: the test reports what went wrong first."""
        try:
            yield bus
        except BaseException as failure:
            self.stop_leftovers([bus], failure, timeout)
            raise
        self.stop_leftovers([bus], None, timeout)

    def stop_leftovers(
        self,
        buses: Iterable[EventBus],
        failure: BaseException | None,
        timeout: float | None = None,
    ) -> None:
        """Stop each of `buses` whose stop() this test has not called. Without a `failure`, a
        stop that fails fails the test; with one, it is added to it as a note."""
        for bus in buses:
            if self.stop_was_called(bus):
                continue
            if failure is None:
                self.stop_bus(bus, timeout)
                continue
            try:
                # The test has failed: the stop only frees what the bus holds, so it need not
                # wait to deliver anything (timeout 0), and a stop() that hangs costs stop_slack.
                self.stop_bus(bus, 0 if timeout is None else timeout)
            except Exception as exc:  # the failure being raised says more; this one is a note
                failure.add_note(f"Then stopping the bus failed too: {exc}")

    def stop_was_called(self, bus: EventBus) -> bool:
        stopped = self.__dict__.get("_contract_stopped", [])
        return any(b is bus for b in stopped)

    def stop_bus(self, bus: EventBus, timeout: float | None = None) -> None:
        """`bus.stop(timeout)` (default `stop_timeout`), failing the test if it has not returned
        within `timeout + stop_slack` seconds. It runs in a daemon thread, so a bus whose stop
        hangs fails the test instead of hanging the run."""
        wait = self.stop_timeout if timeout is None else timeout
        self.__dict__.setdefault("_contract_stopped", []).append(bus)
        knob = "stop_timeout" if timeout is None else "its timeout"
        self.bounded(
            self.timed_limit(
                f"stop(timeout={wait:g})",
                wait,
                knob,
                "stop() must be bounded by its timeout, whatever the consumers do",
            ),
            bus.stop,
            wait,
        )

    def run_async(
        self, main: Callable[[Watch, list[EventBus]], Coroutine[Any, Any, T]], what: str
    ) -> T:
        """`asyncio.run(main(watch, made))` in a daemon thread, within `async_limit`. `main`
        makes its calls into the bus through `watch.call()` and lists the buses it makes in
        `made`: those it did not stop are stopped afterwards, whatever happened."""
        made: list[EventBus] = []
        try:
            result = run_watched(
                lambda watch: asyncio.run(main(watch, made)),
                self.async_limit(what),
                name="contract-loop",
            )
        except BaseException as failure:
            self.stop_leftovers(made, failure)
            raise
        self.stop_leftovers(made, None)
        return result

    # ----------------------------------------------------------------------------- reading

    def receive(self, sub: Subscription, n: int) -> list[Event]:
        """Read exactly `n` events from `sub`, failing the test if they do not arrive."""

        def read(watch: Watch) -> list[Event]:
            bound = self.get_limit()
            got: list[Event] = []
            while len(got) < n:
                try:
                    got.append(watch.call(bound, sub.get, timeout=self.receive_timeout))
                except TimeoutError:
                    raise AssertionError(
                        f"received only {len(got)} of {n} events within "
                        f"{self.receive_timeout} s (receive_timeout)"
                    ) from None
            return got

        return run_watched(read)

    def drain(self, sub: Subscription) -> list[Event]:
        """Read `sub` with `get()` until it ends (its bus stopped), failing the test if it does
        not, within `receive_timeout + stop_slack` seconds."""
        ending = self.ending_limit("reading the subscription with get()")

        def read(watch: Watch) -> list[Event]:
            bound = self.get_limit()
            got: list[Event] = []
            while True:
                try:
                    got.append(watch.call(bound, sub.get, timeout=self.receive_timeout))
                except SubscriptionClosed:
                    return got
                except TimeoutError:
                    raise AssertionError(
                        f"the subscription neither ended nor yielded within "
                        f"{self.receive_timeout} s (receive_timeout; after {len(got)} events): "
                        "stop() must end every subscription"
                    ) from None

        return run_watched(read, ending)

    def iterate(self, sub: Subscription) -> list[Event]:
        """`list(sub)` after its bus stopped: `for event in sub` must end once the buffered
        events are read, within `receive_timeout + stop_slack` seconds."""
        ending = self.ending_limit("iterating the subscription")

        def read(watch: Watch) -> list[Event]:
            it = watch.call(ending, iter, sub)
            got: list[Event] = []
            while True:
                # Each step has the whole iteration's bound: a next() that waits for ever
                # is the iteration not ending, and is reported as that.
                item = watch.call(ending, next, it, _END)
                if item is _END:
                    return got
                assert isinstance(item, Event), f"iterating a subscription gave {item!r}"
                got.append(item)

        return run_watched(read, ending)

    def ending_limit(self, doing: str) -> Bound:
        """The bound of reading a stopped bus's subscription to its end."""
        return Bound(
            f"after stop(), {doing}",
            self.receive_timeout + self.stop_slack,
            "receive_timeout + stop_slack",
            "stop() must finish every subscription",
            verb="did not end",
        )

    # ------------------------------------------------------------------------------ figures

    @staticmethod
    def entry(stats: BusStats, sub: Subscription) -> SubscriberStats:
        """The bus's `stats().subscribers` entry of `sub` (found by name)."""
        for figures in stats.subscribers:
            if figures.name == sub.name:
                return figures
        names = [s.name for s in stats.subscribers]
        raise AssertionError(f"stats().subscribers has no entry {sub.name!r} (it has {names})")

    @staticmethod
    def assert_accounted(stats: BusStats, figures: SubscriberStats) -> None:
        """Every accepted event reached this subscriber's buffer, or is counted as its miss, or
        as given up by the bus (`lost`), exactly (for a subscription older than every publish,
        once the bus has stopped)."""
        accounted = figures.delivered + figures.dropped
        expected = stats.published - stats.lost
        assert accounted == expected, (
            f"subscriber {figures.name}: delivered {figures.delivered} + dropped "
            f"{figures.dropped} = {accounted}, but published {stats.published} - lost "
            f"{stats.lost} = {expected}: events went missing without being counted, or twice"
        )
