"""Checks of `stop()` that the memory, Redis and NATS tests share.

`check_stop_timeouts`: a `stop_timeout` that is not a finite number of seconds is refused when
the bus is made (an infinite one made `stop()` raise `OverflowError`), `stop(nan)` is refused
before anything stops, and `stop(inf)` is an explicit "no limit" that delivers everything.

`check_full_subscriptions_given_up_together`: twelve full subscriptions cost one wait at stop(),
not one each.

`second_stop_meanwhile` and `stop_inside_stop` make a stop() while another runs, from another
thread and from a signal handler on the stopping thread, for the caller to judge how long each
took (the bus's server frozen, so that the first stop() takes its time)."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from eventbus_core import BusStats
from eventbus_core.testing import make_event

__all__ = [
    "check_full_subscriptions_given_up_together",
    "check_stop_timeouts",
    "second_stop_meanwhile",
    "stop_inside_stop",
]


def check_full_subscriptions_given_up_together(bus: Any) -> None:
    """Twelve subscriptions of 5 events, 100 published: `stop(2.0)` gives them up together.
    Each one's clock started once the one before was given up on: 0.25 s each, twelve took a
    whole stop(2.0) and were then marked uncounted (trial 219)."""
    subs = [bus.subscribe(buffer_size=5) for _ in range(12)]
    for i in range(100):
        bus.publish(make_event(i))
    assert bus.flush(10)
    started = time.monotonic()
    bus.stop(2.0)
    assert time.monotonic() - started < 1.5  # a correctness bound: 0.25 s once, not twelve
    for sub in subs:
        assert not sub.uncounted_at_close
        assert sub.stats().delivered + sub.stats().dropped == 100


def check_stop_timeouts(make: Callable[..., Any]) -> BusStats:
    """Run the check on buses built by `make(**options)`; the stopped bus's figures, for the
    caller's own checks of where its 20 events went."""
    for value in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match="stop_timeout must be a finite number"):
            make(stop_timeout=value)
    bus = make()
    for i in range(20):
        bus.publish(make_event(i))
    with pytest.raises(ValueError, match="nan"):
        bus.stop(float("nan"))
    # flush(nan) waited without end while the server was frozen (trial 147).
    with pytest.raises(ValueError, match=r"flush\(\) timeout must be a number of seconds"):
        bus.flush(float("nan"))
    with pytest.raises(TypeError, match=r"flush\(\) timeout"):
        bus.flush("1")
    bus.stop(float("inf"))  # the stop a NaN refused was not half done: this one delivers all
    figures: BusStats = bus.stats()
    assert (figures.published, figures.lost) == (20, 0)
    return figures


def second_stop_meanwhile(bus: Any, first: float = 1.5) -> tuple[float, BusStats]:
    """`stop(first)` in a thread, then, 0.1 s later, `stop(inf)` here: the seconds the second
    took, and the figures right after it returned (before the first thread is joined)."""
    stopping = threading.Thread(target=bus.stop, args=(first,))
    stopping.start()
    time.sleep(0.1)
    began = time.monotonic()
    bus.stop(math.inf)  # no limit of its own: it returns with the first
    took = time.monotonic() - began
    stats: BusStats = bus.stats()
    stopping.join(10)
    return took, stats


def stop_inside_stop(bus: Any, first: float = 1.5) -> tuple[float, list[float]]:
    """`stop(first)` here, with a SIGALRM handler calling `stop(inf)` 0.3 s into it, on this
    thread: the seconds the first took, and those the handler's took (empty if it never ran)."""
    inner: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        began = time.monotonic()
        bus.stop(math.inf)
        inner.append(time.monotonic() - began)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        began = time.monotonic()
        bus.stop(first)
        took = time.monotonic() - began
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return took, inner
