"""Contract tests of `stop(timeout)` and `flush(timeout)` while a write is in progress.

The suite's other timed stops meet a bus whose slowness is a consumer that never reads; a
networked backend is slow in its own write (a server that answers late, or not at all), and a
stop or flush that waits that write out passed every test (trial 268: `stop(0.1)` took 3.8 s
and `flush(0.1)` returned True after 1.95 s). These need a bus whose writes are slow, which only
its author can make: `make_slow_bus()`.
"""

from __future__ import annotations

import time

from eventbus_core._bus import EventBus
from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core.capabilities import Flushable, capability

__all__ = ["SlowWriteContract"]

_EVENTS = 10
_WRITE_UNDER_WAY = 0.3
"""Seconds between the publishes and the timed call: time for the bus to start its write."""


_IF_NOT_SLOW = (
    " (or make_slow_bus() made a bus whose writes are not slow: each must take "
    "slow_write_seconds or more, or never finish)"
)


class SlowWriteContract(ContractBase):
    """`stop(0.1)` and `flush(0.1)` keep to their timeouts while a write does not finish.

    Override `make_slow_bus(buffer_size)` to return a running bus of your backend whose writes
    take at least `slow_write_seconds` (2 s) each, or never finish: pointed at a relay that
    holds the server's replies, or with a test-only switch that sleeps where it sends. Without
    it, these tests are skipped.
    """

    slow_write_seconds: float = 2.0

    def make_slow_bus(self, buffer_size: int) -> EventBus | None:
        """A bus of your backend whose writes take `slow_write_seconds` or more (None: these
        tests are skipped)."""
        return None

    def _slow_bus(self) -> EventBus:
        import pytest

        bus = self.make_slow_bus(100)
        if bus is None:
            pytest.skip("make_slow_bus() returned None: no bus with a slow write to test")
        return bus

    def test_a_stop_during_a_slow_write_keeps_to_its_timeout(self) -> None:
        with self.stopping(self._slow_bus(), 0) as bus:
            self.publish_each(bus, (make_event(i) for i in range(_EVENTS)))
            time.sleep(_WRITE_UNDER_WAY)
            started = time.monotonic()
            self.stop_bus(bus, 0.1)
            took = time.monotonic() - started
            final = self.stats_bounded(bus)
        assert took <= 0.1 + self.stop_overshoot, (
            f"stop(timeout=0.1) while a write of {self.slow_write_seconds:g} s or more was in "
            f"progress took {took:.2f} s, more than its timeout + stop_overshoot "
            f"({self.stop_overshoot:g} s): stop() must not wait a write out past its timeout"
        )
        assert (final.published, final.dropped) == (_EVENTS, 0), (
            f"{_EVENTS} publish() calls into an empty buffer of 100, but stats() says "
            f"published={final.published} dropped={final.dropped}"
        )
        assert final.lost > 0, (
            f"stop(timeout=0.1) returned while a write of {self.slow_write_seconds:g} s or more "
            f"was in progress, yet stats().lost is 0: what stop() gives up must be counted in "
            f"lost (it cannot have been delivered){_IF_NOT_SLOW}"
        )

    def test_a_flush_during_a_slow_write_keeps_to_its_timeout(self) -> None:
        import pytest

        with self.stopping(self._slow_bus(), 0) as bus:
            flushable = capability(bus, Flushable)
            if flushable is None:
                pytest.skip("the bus offers no flush() (capability Flushable)")
            self.publish_each(bus, (make_event(i) for i in range(_EVENTS)))
            time.sleep(_WRITE_UNDER_WAY)
            started = time.monotonic()
            flushed = self.flush_bounded(flushable, 0.1, "its timeout")
            took = time.monotonic() - started
        assert took <= 0.1 + self.stop_overshoot, (
            f"flush(timeout=0.1) while a write of {self.slow_write_seconds:g} s or more was in "
            f"progress took {took:.2f} s, more than its timeout + stop_overshoot "
            f"({self.stop_overshoot:g} s): flush() must return False once its timeout has passed"
        )
        assert flushed is False, (
            f"flush(timeout=0.1) returned {flushed!r} while a write of "
            f"{self.slow_write_seconds:g} s or more was in progress: it cannot have delivered "
            f"everything, and must say so (False){_IF_NOT_SLOW}"
        )
