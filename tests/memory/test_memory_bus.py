"""Behaviour of InMemoryEventBus beyond the shared contract."""

from __future__ import annotations

import json
import os
import re
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from eventbus_core import Event, EventBusSettings, create_bus
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus
from tests._forked import wait_child
from tests._python import run_python
from tests._stop_timeouts import check_stop_timeouts


def test_full_buffer_drops_and_counts_every_attempt() -> None:
    bus = InMemoryEventBus(buffer_size=10)
    bus.subscribe()  # never reads
    for i in range(20_000):
        bus.publish(make_event(i))
    published, dropped = bus.stats()
    assert published + dropped == 20_000
    assert dropped > 0
    bus.stop()
    published_after, dropped_after = bus.stats()
    assert published_after + dropped_after == 20_000


def test_stuck_subscriber_does_not_delay_another() -> None:
    # Retries 0.5 s apart: if the worker slept for the stuck subscriber, the live one would
    # wait seconds per chunk and the 10 s bound below would run out.
    bus = InMemoryEventBus(buffer_size=64, retry_base=0.5)
    stuck = bus.subscribe("stuck")
    live = bus.subscribe("live")
    received: list[str] = []
    progress = threading.Condition()

    def consume() -> None:
        for event in live:
            with progress:
                received.append(event.request_id)
                progress.notify_all()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    for chunk in range(0, 2_048, 32):
        for i in range(chunk, chunk + 32):
            bus.publish(make_event(i))
        with progress:
            # Wait for the live reader before the next chunk, so nothing is refused upstream.
            assert progress.wait_for(lambda n=chunk + 32: len(received) >= n, timeout=10)
    assert received == [f"req-{i}" for i in range(2_048)]
    bus.stop()
    reader.join(5)
    figures = stuck.stats()
    assert figures.delivered == 64  # its buffer filled and it never read
    assert figures.delivered + figures.dropped == 2_048
    assert bus.stats() == (2_048, 0)


def test_per_subscriber_figures_while_running() -> None:
    bus = InMemoryEventBus(buffer_size=100)
    sub = bus.subscribe("reader")
    for i in range(30):
        bus.publish(make_event(i))
    assert len([sub.get(timeout=5) for _ in range(30)]) == 30
    figures = bus.stats().subscribers
    assert [(s.name, s.delivered, s.dropped, s.queued) for s in figures] == [("reader", 30, 0, 0)]
    bus.stop()


def test_subscriber_that_catches_up_within_retries_loses_nothing() -> None:
    bus = InMemoryEventBus(buffer_size=10, retry_base=0.2)
    sub = bus.subscribe()
    for i in range(10):
        bus.publish(make_event(i))
    assert bus.flush(timeout=5)
    for i in range(10, 15):  # the subscriber's buffer is full: these wait for a retry
        bus.publish(make_event(i))
    got = [sub.get(timeout=5) for _ in range(15)]
    assert [e.request_id for e in got] == [f"req-{i}" for i in range(15)]
    assert sub.stats().dropped == 0
    bus.stop()


def test_stop_timeout_bounds_the_wait() -> None:
    bus = InMemoryEventBus(buffer_size=10, retry_base=10.0)
    bus.subscribe()
    for i in range(20):
        bus.publish(make_event(i))
    bus.stop(timeout=0.2)  # retries would take 70 s; stop must not wait for them
    assert bus.closed


def test_context_managers_stop_the_bus() -> None:
    with InMemoryEventBus(10) as bus:
        sub = bus.subscribe()
        bus.publish(make_event(1))
    assert [e.request_id for e in sub] == ["req-1"]


async def test_async_context_manager() -> None:
    async with InMemoryEventBus(10) as bus:
        sub = bus.subscribe()
        bus.publish(make_event(1))
        assert (await sub.aget(timeout=5)).request_id == "req-1"
    assert bus.closed


def test_subscribe_after_stop_is_already_ended() -> None:
    bus = InMemoryEventBus(10)
    bus.stop()
    assert list(bus.subscribe()) == []


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_rejects_bad_buffer_size(bad: object) -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        InMemoryEventBus(bad)  # type: ignore[arg-type]


def test_create_bus_uses_buffer_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBSERVABILITY_BUFFER_SIZE", "17")
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "in-memory")
    bus = create_bus()
    assert isinstance(bus, InMemoryEventBus)
    assert bus.buffer_size == 17
    bus.stop()


def test_create_bus_with_explicit_settings() -> None:
    bus = create_bus(EventBusSettings(backend="memory", buffer_size=3, stop_timeout=1.0))
    assert isinstance(bus, InMemoryEventBus)
    assert (bus.buffer_size, bus.stop_timeout) == (3, 1.0)
    bus.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# Python 3.12+ warns about fork() with threads running: that hazard is what this test covers.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_bus_works_in_a_forked_child() -> None:
    bus = InMemoryEventBus(100)
    sub = bus.subscribe()
    bus.publish(make_event(1))
    assert sub.get(timeout=5).request_id == "req-1"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its bus must still deliver, with a worker of its own
        code = 1
        try:
            bus.publish(make_event(2))
            code = 0 if sub.get(timeout=5).request_id == "req-2" else 1
            bus.stop()
            os.write(write_end, str(bus.stats().published).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    assert wait_child(pid) == 0
    assert os.read(read_end, 16) == b"2"
    os.close(read_end)
    bus.publish(make_event(3))  # the parent's bus is untouched by the child's
    assert sub.get(timeout=5).request_id == "req-3"
    bus.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_childs_figures_add_up_with_what_it_left_to_its_parent() -> None:
    # A long linger keeps a burst in the buffer at the fork: the parent's to deliver. The child's
    # figures (copied at the fork) showed them in `published` and nowhere else.
    bus = InMemoryEventBus(1000, linger=5.0)
    sub = bus.subscribe()
    bus.publish(make_event(0))
    assert sub.get(timeout=5).request_id == "req-0"  # the drainer now lingers
    for n in range(1, 51):
        bus.publish(make_event(n))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for n in range(100, 120):
                bus.publish(make_event(n))
            bus.stop()
            stats = bus.stats()
            (mine,) = stats.subscribers
            figures = (stats.published, stats.lost, stats.extra["left_to_parent"], mine.delivered)
            os.write(write_end, json.dumps([*figures, mine.dropped]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    published, lost, left, delivered, dropped = json.loads(os.read(read_end, 200))
    os.close(read_end)
    assert published == 71
    assert left > 0
    assert delivered + dropped == published - lost - left
    bus.stop()
    assert sub.qsize() + 1 == bus.stats().subscribers[0].delivered == 51  # the parent delivered


def test_stop_timeout_must_be_a_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="stop_timeout must be a number of seconds"):
        InMemoryEventBus(stop_timeout="5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (
            {"linger": 0},
            "linger must be a finite number of seconds > 0, got 0",
        ),  # the drainer busy-looped a core (trial 261)
        ({"retry_base": 0}, "retry_base must be a finite number of seconds > 0"),
        ({"retries": "3"}, "retries must be a whole number >= 0, got '3'"),  # a bare TypeError
        ({"retries": None}, "retries must be a whole number >= 0, got None"),
        ({"retries": 1.5}, "retries must be a whole number >= 0, got 1.5"),  # was accepted
        ({"retries": True}, "retries must be a whole number >= 0, got True"),
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
    ],
)
def test_settings_that_would_spin_or_name_nothing_are_refused(
    options: dict[str, Any], said: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        InMemoryEventBus(**options)


def test_stop_timeout_must_be_finite_and_stop_takes_inf_as_no_limit() -> None:
    subs = []

    def make(**options: Any) -> InMemoryEventBus:
        bus = InMemoryEventBus(**options)
        subs.append(bus.subscribe())
        return bus

    check_stop_timeouts(make)
    assert len(subs[-1].get_batch(max_items=100)) == 20


def test_what_is_not_an_event_is_refused_counted_and_reported(
    caplog: pytest.LogCaptureFixture, not_event_log: None
) -> None:
    # None, a str, a dict reached subscribers as they were (helper-89).
    bus = InMemoryEventBus()
    sub = bus.subscribe("s")
    # The Event class itself and an object that merely has a `log_id` were taken too
    # (helper-110): they are not events either.
    odd = (None, "b", {"RequestID": "c"}, Event, SimpleNamespace(log_id=1))
    for item in (Event(request_id="a"), *odd, Event(request_id="d")):
        bus.publish(item)  # type: ignore[arg-type]
    assert bus.flush(5)
    assert [e.request_id for e in sub.get_batch(10, 1)] == ["a", "d"]
    s = bus.stats()
    assert (s.published, s.dropped) == (2, 5)
    assert "publish() takes an eventbus_core.Event, got NoneType" in caplog.text
    assert "(1 such call(s) since" in caplog.text  # once a minute, with the count since
    bus.stop()


def test_publish_called_with_wrong_arguments_names_publish_not_an_internal_method() -> None:
    # "Batcher._publish_buffered() missing 1 required positional argument" (helper-110).
    bus = InMemoryEventBus()
    try:
        with pytest.raises(TypeError) as caught:
            bus.publish()  # type: ignore[call-arg]
        assert str(caught.value) == "publish() missing 1 required positional argument: 'event'"
        with pytest.raises(TypeError, match=r"^publish\(\) takes 2 positional arguments"):
            bus.publish(make_event(0), make_event(1))  # type: ignore[call-arg]
    finally:
        bus.stop(1)


def test_help_on_publish_says_what_it_does() -> None:
    # help(bus.publish) showed `Batcher._publish_buffered` with no docstring (helper-111).
    bus = InMemoryEventBus()
    try:
        assert bus.publish.__doc__ and "never blocks" in bus.publish.__doc__
        assert bus.publish.__qualname__ == bus.publish.__name__ == "publish"
    finally:
        bus.stop(1)


def test_a_stop_timeout_that_is_not_a_number_is_refused_naming_it() -> None:
    # "must be real number, not str", naming nothing (trial 129).
    bus = InMemoryEventBus()
    try:
        with pytest.raises(TypeError, match=r"stop\(\) timeout must be a number of seconds"):
            bus.stop("1")  # type: ignore[arg-type]
    finally:
        bus.stop()


ENDS_WITHOUT_STOP = """
import logging, sys, time
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus
bus = InMemoryEventBus(10)
for round_ in range(2):
    for i in range(3000):
        bus.publish(make_event(i))
    bus.flush(5)
    time.sleep(0.2)  # the first round's drops are said by now; the second's fall in its minute
print(bus.stats().dropped, flush=True)
# no stop(): the process ends, as a server's worker that relied on a flush at its shutdown
"""


def test_drops_not_said_yet_are_said_when_the_process_ends_without_stop() -> None:
    # A worker's 6,930 drops during a Redis outage: 114 were said, the rest held back by the
    # once-a-minute bound until the process had ended (trial 243).
    done = run_python(ENDS_WITHOUT_STOP)
    assert done.returncode == 0, done.stderr
    dropped = int(done.stdout)
    said = [int(m) for m in re.findall(r"dropped (\d+) event\(s\)", done.stderr)]
    assert dropped > 0 and said, done.stderr
    assert sum(said) == dropped, done.stderr
