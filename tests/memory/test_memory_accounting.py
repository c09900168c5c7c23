"""InMemoryEventBus: flush() waits for whole fan-outs, subscribe() is a clean cut, and stop()
never makes `published` go down.

Several tests hold the worker inside one subscriber's `offer()` (a gate), which freezes a
fan-out half done, deterministically, where the races of issue 8 item 9 and issue 9 item 7 hit.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest

from eventbus_core import Event, Subscription
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus


@dataclass
class Gate:
    """The worker blocks in the gated subscriber's next `offer()` until `release` is set."""

    entered: threading.Event
    release: threading.Event


GateFactory = Callable[[Subscription], Gate]


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[GateFactory]:
    gates: list[Gate] = []

    def install(sub: Subscription) -> Gate:
        g = Gate(threading.Event(), threading.Event())
        real = sub.offer

        def gated(events: Sequence[Event]) -> int:
            if not g.release.is_set():
                g.entered.set()
                g.release.wait(10)
            return real(events)

        monkeypatch.setattr(sub, "offer", gated)
        gates.append(g)
        return g

    yield install
    for g in gates:  # never leave a worker blocked
        g.release.set()


def test_flush_waits_until_every_subscriber_has_the_batch(gate: GateFactory) -> None:
    bus = InMemoryEventBus(1000)
    first = bus.subscribe("first")
    second = bus.subscribe("second")
    g = gate(first)
    for i in range(10):
        bus.publish(make_event(i))
    assert g.entered.wait(5)  # the worker took the batch and is offering it to `first`
    # Taken from the buffer is not delivered: `second` has nothing yet.
    assert bus.flush(timeout=0.2) is False
    assert second.qsize() == 0
    g.release.set()
    assert bus.flush(timeout=5) is True
    assert (first.qsize(), second.qsize()) == (10, 10)
    bus.stop()


def test_flush_true_means_delivered_to_every_subscriber_repeatedly() -> None:
    # The original race: 200 subscribers, 5,000 events, flush() returned early in ~2 runs of
    # 300. A tiny switch interval makes the flushing thread run in the middle of fan-outs.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        bus = InMemoryEventBus(5_000)
        for _ in range(40):
            subs = [bus.subscribe(buffer_size=5_000) for _ in range(200)]
            for i in range(5_000):
                bus.publish(make_event(i))
            assert bus.flush(timeout=10)
            short = [s.name for s in subs if s.stats().delivered != 5_000]
            assert not short, f"flush() returned True before {len(short)} subscriber(s) had it"
            for s in subs:
                s.close()
        bus.stop()
    finally:
        sys.setswitchinterval(old)


def test_event_still_buffered_at_subscribe_is_not_delivered(gate: GateFactory) -> None:
    bus = InMemoryEventBus(1000)
    g = gate(bus.subscribe("holder"))
    bus.publish(make_event(0))
    assert g.entered.wait(5)  # worker busy: what is published now stays in the bus's buffer
    for i in range(1, 4):
        bus.publish(make_event(i))
    late = bus.subscribe("late")
    for i in range(4, 7):
        bus.publish(make_event(i))
    g.release.set()
    assert bus.flush(timeout=5)
    assert [e.request_id for e in late.get_batch()] == ["req-4", "req-5", "req-6"]
    assert late.stats().dropped == 0
    bus.stop()


def test_subscribe_between_publishes_cuts_cleanly_under_load() -> None:
    bus = InMemoryEventBus(100_000)
    early = bus.subscribe(buffer_size=100_000)
    for round_ in range(200):
        base = round_ * 20
        for i in range(10):
            bus.publish(make_event(base + i))
        late = bus.subscribe(buffer_size=100)
        for i in range(10, 20):
            bus.publish(make_event(base + i))
        assert bus.flush(timeout=5)
        assert [e.request_id for e in late.get_batch()] == [
            f"req-{base + i}" for i in range(10, 20)
        ]
        late.close()
    assert early.qsize() == 4_000
    bus.stop()


def test_stop_that_runs_out_of_time_counts_leftovers_as_lost(
    gate: GateFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bus = InMemoryEventBus(1000)
    sub = bus.subscribe("only")
    g = gate(sub)
    bus.publish(make_event(0))
    assert g.entered.wait(5)  # the worker holds event 0 in a fan-out
    for i in range(1, 6):
        bus.publish(make_event(i))
    before = bus.stats()
    assert (before.published, before.dropped, before.lost) == (6, 0, 0)

    stopper = threading.Thread(target=bus.stop, kwargs={"timeout": 0.05})
    stopper.start()
    deadline = time.monotonic() + 10
    while "did not finish" not in caplog.text:  # stop() gave up waiting for the worker
        assert time.monotonic() < deadline, "stop() never reported that its time ran out"
        time.sleep(0.01)
    g.release.set()  # the worker ends the fan-out in progress, and starts no other cycle
    stopper.join(5)
    assert not stopper.is_alive()

    after = bus.stats()
    assert after.published == 6  # never goes down
    assert after.dropped == 0  # nothing was refused by publish()
    assert after.lost == 5  # accepted, then given up when the time ran out
    assert sub.stats().delivered == 1  # event 0, whose fan-out was under way
    bus.publish(make_event(99))
    assert bus.stats()[:2] == (6, 1)
    assert bus.flush(timeout=1)  # lost events are settled: flush does not wait for them
