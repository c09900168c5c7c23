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

pytest collects the inherited tests. `BusContractTests` says what each knob and hook means.

A backend that declares capabilities (`eventbus_core.capabilities`) adds the optional class of
each, with the same `make_bus()`: `CrossProcessContract`, `ReachableContract`,
`ReadableLogContract`, `LogSourcesContract`, `DescribableContract`, `ConsumerGroupContract`
(with `BacklogContract` where its sources declare `Backlog`), `IsolatableContract`.
`Flushable` is checked by `BusContractTests` itself; `KeepAlive` and `SourceFigures` by
`ConsumerGroupContract`; `Exhaustible` belongs to core's own subscription source.
Within one test, the buses `make_bus()` returns must share one namespace of the test's own
(the contract classes set none; a fixture of yours does):

    class TestMyBusLog(ReadableLogContract, DescribableContract):
        @pytest.fixture(autouse=True)
        def _namespace(self, tmp_path: Path) -> None:
            self.path = str(tmp_path / "log.db")

        def make_bus(self, buffer_size: int) -> EventBus:
            return MyBus(self.path, buffer_size=buffer_size)
"""

from __future__ import annotations

import threading
from typing import Any

from eventbus_core._bus import BaseEventBus, check_buffer_size
from eventbus_core._contract._accounting import AccountingContract
from eventbus_core._contract._base import make_event
from eventbus_core._contract._capabilities import (
    CrossProcessContract,
    DescribableContract,
    IsolatableContract,
    ReachableContract,
    ReadableLogContract,
)
from eventbus_core._contract._delivery import DeliveryContract
from eventbus_core._contract._exit import ExitContract
from eventbus_core._contract._fork import ForkContract
from eventbus_core._contract._groups import ConsumerGroupContract
from eventbus_core._contract._secrets import SecretsContract
from eventbus_core._contract._slow_writes import SlowWriteContract
from eventbus_core._contract._sources import BacklogContract, LogSourcesContract
from eventbus_core._event import Event
from eventbus_core._stats import BusStats
from eventbus_core._subscription import Subscription

__all__ = [
    "BacklogContract",
    "BusContractTests",
    "ConsumerGroupContract",
    "CrossProcessContract",
    "DescribableContract",
    "IsolatableContract",
    "LogSourcesContract",
    "ReachableContract",
    "ReadableLogContract",
    "RecordingBus",
    "make_event",
]


class RecordingBus(BaseEventBus):
    """An in-process bus that records every published event, for applications' unit tests.

    `published` holds every event in order. Subscriptions receive the events published after
    they were made, synchronously, so tests need no waiting; one whose buffer (`buffer_size`
    events) is full misses the event, counted in its `dropped`.
    """

    def __init__(self, buffer_size: int = 100_000) -> None:
        self.published: list[Event] = []
        self.buffer_size = buffer_size
        self._subs: list[Subscription] = []  # still listed in stats() after stop()
        self._lock = threading.Lock()
        self._stopped = False
        self._accepted = 0  # stats().published: `clear()` forgets events, not the count
        self._dropped = 0

    def publish(self, event: Event) -> None:
        """Record `event` and hand it to current subscribers."""
        with self._lock:
            if self._stopped:
                self._dropped += 1
                return
            self.published.append(event)
            self._accepted += 1
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
            subs = list(self._subs)
        for sub in subs:
            sub.finish()

    def stats(self) -> BusStats:
        """`(published, dropped)`."""
        with self._lock:
            subs = tuple(s.stats() for s in self._subs)
        return BusStats(self._accepted, self._dropped, subscribers=subs)

    def clear(self) -> None:
        """Forget the recorded events (`stats()` still counts them: its figures never go
        down)."""
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


class BusContractTests(
    DeliveryContract,
    AccountingContract,
    SlowWriteContract,
    ForkContract,
    ExitContract,
    SecretsContract,
):
    """The behavioural contract of an event bus, as a pytest test class to subclass.

    Implement `make_bus(buffer_size)`: a new, running bus whose publish buffer holds
    `buffer_size` events and whose subscriptions each buffer at most `buffer_size` events.
    Every test stops the buses it makes, through `stop_bus()`, which fails the test (instead of
    hanging the run) when `stop(timeout)` has not returned after `timeout + stop_slack` s; a
    test that fails stops its buses all the same (with `stop(0)`), before the next test.

    A call into the bus that hangs fails its test instead of hanging the run: each call (but
    `make_bus()`, made directly on the test's thread or event loop) is made in a daemon thread,
    and fails the test, naming the call and the knobs of its bound, when it has not returned
    within `publish_bound` (one `publish()`), `receive_timeout + publish_bound` (a test's run of
    publishes), `timeout + stop_slack` (a call given a timeout: `stop()`, `flush()`, `get()`,
    the `settle()` hook with `receive_timeout`) or `receive_timeout` (`subscribe()`, `stats()`,
    `close()`, and the capability classes' calls without a timeout). After `stop()`, reading a
    subscription to its end must take at most `receive_timeout + stop_slack`.

    What the suite checks: delivery in order to every subscriber, and only of events published
    after `subscribe()`; `flush()` (when offered); overflow refused or missed and counted,
    never unbounded; no drops where none can happen; a slow subscriber's misses counted in its
    own `stats().subscribers` entry, not in the bus's `dropped`; `published + dropped` equal to
    the `publish()` calls, neither ever going down (an accepted event given up by `stop()` is
    counted in `lost`), also at every moment before the bus settled; `publish()` neither
    waiting nor doing I/O on its caller's thread (what it calls is looked at, not only how long
    it takes); `stop(timeout)` bounded with a consumer that never reads (`stop(1.0)` and
    `stop(0.1)` timed), and `stop(0.1)` and `flush(0.1)` while a write does not finish (with
    `make_slow_bus()`); async use;
    a bus made and used before `os.fork()` working on in the child (where fork exists); a
    process (a `multiprocessing` child) that ends without `stop()` delivering what it accepted.
    A bus keeps listing its subscriptions in `stats().subscribers` after `stop()`, with their
    final figures. No credential of the events it carries (an `Authorization` header, a cookie,
    an `api_key` in the path) appears in its log records at any level, its `repr()`, its
    `stats()` or the errors its subscriptions raise, through drops, misses and a stop.

    Knobs (class attributes):
        receive_timeout: Seconds to wait for an event that should arrive (default 10).
        stop_timeout: The timeout the tests pass to `stop()` when they need no other (5).
        stop_slack: Seconds `stop(timeout)` (and any call given a timeout) may take beyond
            `timeout` before the suite calls it hung (3).
        stop_overshoot: Seconds `stop(1.0)` and `stop(0.1)`, each timed with a consumer that
            never reads, may take beyond their timeout (1): a stop that waits past its
            timeout fails.
        publish_bound: Seconds the slowest single `publish()` may take, buffer full or not (1):
            a publish that waits for room or for a server fails.
        in_process: How the bus hands events to subscribers. True: within this process (the
            memory backend, `RecordingBus`); then `flush()` returns only once every accepted
            event is in every subscriber's buffer, and an event published before `subscribe()`
            is never delivered to it, even if it was still buffered. False: through a backend
            (Redis, NATS); then `flush()` means stored there, subscribers read it afterwards,
            and a subscription starts at what the backend holds, so the tests `settle()`
            before subscribing. None (default): True unless the bus declares
            `capabilities.CrossProcess`.

        slow_write_seconds: How long each write of `make_slow_bus()`'s bus takes at least (2).

    Hooks:
        settle(bus): make every event published so far visible to subscribers; by default
            `flush()` for a bus that offers it (`capabilities.Flushable`), nothing otherwise.
        make_slow_bus(buffer_size): a running bus whose writes take `slow_write_seconds` or
            more, or never finish (a relay holding the server's replies, a test-only switch
            that sleeps where it sends); None (default) skips the two tests that stop and
            flush it while a write is in progress.
    """
