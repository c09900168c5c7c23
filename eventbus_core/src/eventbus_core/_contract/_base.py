"""Plumbing of the backend contract suite: the knobs, the bus factory and bounded helpers.

The tests themselves are in `_delivery.py` and `_accounting.py`; backends
subclass `eventbus_core.testing.BusContractTests`, which combines them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventbus_core._bus import EventBus
from eventbus_core._event import Event
from eventbus_core._stats import BusStats, SubscriberStats
from eventbus_core._subscription import Subscription, SubscriptionClosed
from eventbus_core.capabilities import Flushable, capability, is_cross_process

__all__ = ["ContractBase", "make_event"]


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
    # The slowest single publish() call the suite accepts. publish() must not wait for I/O or
    # for room in a buffer; this bound is generous (a GC pause or a machine loaded several
    # times over fits in it: 0.35 s was seen at a load of 7 on 2 cores) and a publish that
    # waits out a socket timeout under a fault does not.
    publish_bound: float = 1.0
    in_process: bool | None = None

    def make_bus(self, buffer_size: int) -> EventBus:
        """Return a new, running bus whose publish buffer holds `buffer_size` events, and whose
        subscriptions each buffer at most `buffer_size` events."""
        raise NotImplementedError("subclasses of BusContractTests implement make_bus()")

    def settle(self, bus: EventBus) -> None:
        """Make every event published so far visible to subscribers: `flush()` for a bus that
        offers it (`Flushable`), nothing otherwise. Override if your bus needs something else."""
        flushable = capability(bus, Flushable)
        if flushable is not None:
            assert flushable.flush(self.receive_timeout), (
                f"flush() did not finish within {self.receive_timeout} s"
            )

    def is_in_process(self, bus: EventBus) -> bool:
        """The `in_process` knob, or else: True unless the bus says it is `CrossProcess`."""
        if self.in_process is not None:
            return self.in_process
        return not is_cross_process(bus)

    @contextmanager
    def bus(self, buffer_size: int = 1000) -> Iterator[EventBus]:
        """A bus that is stopped (within the bound of `stop_bus()`) when the block ends."""
        bus = self.make_bus(buffer_size)
        try:
            yield bus
        finally:
            self.stop_bus(bus)

    def stop_bus(self, bus: EventBus, timeout: float | None = None) -> None:
        """`bus.stop(timeout)` (default `stop_timeout`), failing the test if it has not returned
        within `timeout + stop_slack` seconds. It runs in a daemon thread, so a bus whose stop
        hangs fails the test instead of hanging the run."""
        wait = self.stop_timeout if timeout is None else timeout
        errors: list[BaseException] = []

        def run() -> None:
            try:
                bus.stop(wait)
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)

        stopper = threading.Thread(target=run, name="contract-stop", daemon=True)
        stopper.start()
        stopper.join(wait + self.stop_slack)
        if stopper.is_alive():
            raise AssertionError(
                f"stop(timeout={wait}) had not returned after {wait + self.stop_slack:.1f} s: "
                "stop() must be bounded by its timeout, whatever the consumers do"
            )
        if errors:
            raise errors[0]

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

    def drain(self, sub: Subscription) -> list[Event]:
        """Read `sub` until it ends (its bus stopped), failing the test if it does not."""
        got: list[Event] = []
        while True:
            try:
                got.append(sub.get(timeout=self.receive_timeout))
            except SubscriptionClosed:
                return got
            except TimeoutError:
                raise AssertionError(
                    f"the subscription neither ended nor yielded within {self.receive_timeout} s "
                    f"(after {len(got)} events): stop() must end every subscription"
                ) from None

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
