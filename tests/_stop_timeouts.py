"""One check of how a built-in bus takes its stop timeouts, run by the memory, Redis and NATS
tests: a `stop_timeout` that is not a finite number of seconds is refused when the bus is made
(an infinite one made `stop()` raise `OverflowError`), `stop(nan)` is refused before anything
stops, and `stop(inf)` is an explicit "no limit" that delivers everything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from eventbus_core import BusStats
from eventbus_core.testing import make_event

__all__ = ["check_stop_timeouts"]


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
    bus.stop(float("inf"))  # the stop a NaN refused was not half done: this one delivers all
    figures: BusStats = bus.stats()
    assert (figures.published, figures.lost) == (20, 0)
    return figures
