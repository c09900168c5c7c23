"""`Backoff`: the one retry-delay policy of the project, capped exponential with jitter.

The Redis and NATS backends wait by it between reconnects and resends; the dispatcher's
`RetryPolicy` and read loop, and the memory bus's parked retries, compute their delays with
`backoff_delay()` (the last two without jitter: they compete with no other process). The
delay before attempt `n` (0 for the first retry) is `min(cap, base * 2**n)`, then, with
jitter, a random point between half and all of it: many processes that lost the same server
do not retry in lock step, and none waits less than half the nominal delay.
"""

from __future__ import annotations

import random
from typing import Final

__all__ = ["Backoff", "backoff_delay"]

# 2.0 ** 1024 overflows a float; past 2**1000 every cap in use has long been reached.
_MAX_EXPONENT: Final = 1000


def backoff_delay(attempt: int, base: float, cap: float, *, jitter: bool = True) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first): `min(cap, base *
    2**attempt)`, randomised within [half, all] of it when `jitter` is set."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))
    if jitter:
        return ceiling * random.uniform(0.5, 1.0)  # jitter, not cryptography
    return ceiling


class Backoff:
    """Capped exponential backoff with jitter, for reconnect and retry loops.

    Each `next()` records a failure and returns the delay to wait: `base`, then doubling up to
    `cap`, each randomised between half and all of it. `reset()` records a success.

    Args:
        base: Nominal delay after the first failure, in seconds (> 0).
        cap: Longest nominal delay, in seconds (>= base).
        jitter: Randomise each delay (turn it off only where lock step cannot happen).

    Raises:
        ValueError: `base` is not positive or `cap` is below it.
    """

    def __init__(self, base: float = 0.05, cap: float = 2.0, *, jitter: bool = True) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        """Record a failure and return how long to wait before the next attempt."""
        delay = backoff_delay(self.failures, self.base, self.cap, jitter=self.jitter)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Record a success: the next failure starts from `base` again."""
        self.failures = 0

    def __repr__(self) -> str:
        return f"Backoff(base={self.base!r}, cap={self.cap!r}, failures={self.failures})"
