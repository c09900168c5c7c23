"""`check_stop_timeout`: the one check of a wait's `timeout` argument (`stop()`, `flush()`, a
subscription's `get()`), in a module of its own so that the subscription, which `_bus` imports,
can use it too."""

from __future__ import annotations

import math

__all__ = ["check_stop_timeout"]


def check_stop_timeout(timeout: object, call: str = "stop()") -> None:
    """Refuse a `stop(timeout)` (or `flush(timeout)`, `get(timeout)`...: `call`) that is neither
    None nor a number of seconds.

    Raises:
        TypeError: not a number (`stop("1")` said only "must be real number, not str").
        ValueError: NaN (`flush(nan)` waited without end, trial 147; `get(nan)` spun a core,
            trial 261).
    """
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{call} timeout must be a number of seconds or None, got {timeout!r}")
    # Only a float can be NaN: isnan() of an int past a float's range (10**400) raised
    # OverflowError (trial 265).
    if isinstance(timeout, float) and math.isnan(timeout):
        raise ValueError(f"{call} timeout must be a number of seconds or None, got nan")
