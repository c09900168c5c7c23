"""The backend contract suite (`BusContractTests`) fails for broken buses, and passes for good ones.

Each broken bus below is a built-in backend with one defect the suite exists to catch. They all
run through the suite in one child pytest (a hung `stop()` then leaves its thread behind in the
child, not here), and each must fail the contract tests named for it. The same run holds the
controls, which must pass every test: the memory backend itself and the example backend of
docs/plugins/writing-a-backend.md, exactly as the guide prints it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.core._child_suite import child_outcomes

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDE = ROOT / "docs" / "plugins" / "writing-a-backend.md"

BROKEN_BUSES = '''
import time
import uuid
from collections import deque

import fakeredis

from eventbus_core.testing import BusContractTests
from eventbus_memory import InMemoryEventBus
from eventbus_redis import RedisEventBus


class Quick(BusContractTests):
    """Short bounds, so that failing tests fail fast."""

    receive_timeout = 2.0
    stop_timeout = 0.5
    stop_slack = 1.0


class Unbounded(InMemoryEventBus):
    """Ignores its bound: never refuses, and its subscriptions never fill."""

    def __init__(self, buffer_size):
        super().__init__(10**9)

    def subscribe(self, name=None, *, buffer_size=None):
        return super().subscribe(name, buffer_size=10**9)


class HangingStop(InMemoryEventBus):
    """stop() waits for every subscriber to read what it holds: a stuck consumer hangs it."""

    def stop(self, timeout=None):
        self.flush(1.0)  # the worker's fan-out first: without it the check below can race it
        while any(state.sub.qsize() for state in self._subscribers):
            time.sleep(0.01)
        super().stop(timeout)


class EarlyFlush(InMemoryEventBus):
    """flush() wakes the worker and returns True at once, before the worker has delivered."""

    def __init__(self, buffer_size):
        super().__init__(buffer_size, linger=60)  # the worker runs only when woken
        self._batcher._high_water = 10**9

    def flush(self, timeout=None):
        self._batcher.kick()
        return True


class DropsCountedByTheBus(InMemoryEventBus):
    """Counts a full subscriber's misses in the bus's `dropped`, not in the subscriber's."""

    def subscribe(self, name=None, *, buffer_size=None):
        sub = super().subscribe(name, buffer_size=buffer_size)

        def count_dropped(n):
            with self._batcher.lock:
                self._batcher.refused += n

        sub.count_dropped = count_dropped
        return sub


class ReplaysRecentEvents(InMemoryEventBus):
    """Hands a new subscription the last events published before it subscribed."""

    def __init__(self, buffer_size):
        super().__init__(buffer_size)
        self._recent = deque(maxlen=10)

    def publish(self, event):
        self._recent.append(event)
        super().publish(event)

    def subscribe(self, name=None, *, buffer_size=None):
        sub = super().subscribe(name, buffer_size=buffer_size)
        sub.offer(list(self._recent))
        return sub


class LostBecomesDropped(InMemoryEventBus):
    """What stop() gives up moves from published to dropped, so published goes down."""

    def __init__(self, buffer_size):
        super().__init__(buffer_size, linger=60)  # the worker waits for stop() to wake it
        self._batcher._high_water = 10**9
        self._batcher.kick()  # start it now, so it is parked before the first publish
        time.sleep(0.02)

    def stop(self, timeout=None):
        super().stop(timeout)
        b = self._batcher
        with b.lock:
            moved, b.lost = b.lost, 0
            b.taken -= moved
            b.refused += moved


class EarlyFlushOverRedis(RedisEventBus):
    """A networked bus whose flush() returns True before its writer has stored the events."""

    def flush(self, timeout=5.0):
        return True


class BlockingPublish(InMemoryEventBus):
    """publish() writes synchronously: once, it waits out a slow server's answer."""

    calls = 0

    def publish(self, event):
        super().publish(event)
        self.calls += 1
        if self.calls == 999:
            time.sleep(2.0)


class TestUnbounded(Quick):
    def make_bus(self, buffer_size):
        return Unbounded(buffer_size)


class TestHangingStop(Quick):
    def make_bus(self, buffer_size):
        return HangingStop(buffer_size)


class TestEarlyFlush(Quick):
    def make_bus(self, buffer_size):
        return EarlyFlush(buffer_size)


class TestDropsCountedByTheBus(Quick):
    def make_bus(self, buffer_size):
        return DropsCountedByTheBus(buffer_size)


class TestReplaysRecentEvents(Quick):
    def make_bus(self, buffer_size):
        return ReplaysRecentEvents(buffer_size)


class TestLostBecomesDropped(Quick):
    def make_bus(self, buffer_size):
        return LostBecomesDropped(buffer_size)


class TestEarlyFlushOverRedis(Quick):
    in_process = False  # stored in Redis (a fake one: this is a test of the suite)

    def make_bus(self, buffer_size):
        client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        key = f"contract-{uuid.uuid4().hex}"
        return EarlyFlushOverRedis.log(client, key, 300, 0, buffer_size=buffer_size)


class TestBlockingPublish(Quick):
    def make_bus(self, buffer_size):
        return BlockingPublish(buffer_size)


class TestControlMemory(Quick):
    def make_bus(self, buffer_size):
        return InMemoryEventBus(buffer_size)


class TestControlGuideQueueBus(Quick):
    def make_bus(self, buffer_size):
        return QueueBus(buffer_size)
'''

# Contract tests each broken bus must fail (it may fail others too).
MUST_FAIL = {
    "TestUnbounded": {
        "test_overflow_drops_and_counts_without_blocking",
        "test_stop_is_bounded_with_a_stuck_consumer",
    },
    "TestHangingStop": {
        "test_stop_is_bounded_with_a_stuck_consumer",
        "test_overflow_drops_and_counts_without_blocking",
    },
    "TestEarlyFlush": {"test_flush_makes_every_accepted_event_visible"},
    "TestEarlyFlushOverRedis": {"test_flush_makes_every_accepted_event_visible"},
    "TestDropsCountedByTheBus": {
        "test_slow_subscriber_misses_are_counted_for_it_alone",
        "test_overflow_drops_and_counts_without_blocking",
    },
    "TestReplaysRecentEvents": {"test_only_events_published_after_subscribe_are_delivered"},
    "TestLostBecomesDropped": {"test_published_and_dropped_never_go_down"},
    "TestBlockingPublish": {"test_overflow_drops_and_counts_without_blocking"},
}
CONTROLS = ("TestControlMemory", "TestControlGuideQueueBus")


def guide_queue_bus() -> str:
    """The QueueBus module of the backend guide, verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    found = [b for b in blocks if "class QueueBus(BaseEventBus)" in b]
    assert len(found) == 1, "docs/plugins/writing-a-backend.md should print QueueBus once"
    return found[0]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """{test class: {test name: outcome}} of the whole suite run on every bus above."""
    work = tmp_path_factory.mktemp("contract")
    (work / "queue_bus.py").write_text(guide_queue_bus())
    (work / "test_buses.py").write_text(
        "from queue_bus import QueueBus\n" + textwrap.dedent(BROKEN_BUSES)
    )
    return child_outcomes(work, "-p", "no:asyncio", "--timeout=60")


@pytest.mark.parametrize("bus", sorted(MUST_FAIL))
def test_broken_bus_fails_the_contract(outcomes: dict[str, dict[str, str]], bus: str) -> None:
    results = outcomes[bus]
    passed = sorted(name for name in MUST_FAIL[bus] if results.get(name) != "FAILED")
    assert not passed, f"{bus} should fail {passed}; outcomes: {results}"


@pytest.mark.parametrize("bus", CONTROLS)
def test_good_bus_passes_the_contract(outcomes: dict[str, dict[str, str]], bus: str) -> None:
    results = outcomes[bus]
    assert len(results) >= 17, results
    bad = {name: outcome for name, outcome in results.items() if outcome != "PASSED"}
    assert not bad, f"{bus} should pass the whole contract; it did not pass {bad}"
