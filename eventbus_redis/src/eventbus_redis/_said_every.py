"""`SaidEvery`: a count that a warning says at most every so many seconds, the rest at the end.

A consumer group that stays behind the stream's MAXLEN loses entries at nearly every read
(trial 168: four warnings a second), and a restart after a kill can find a trimmed batch at
each of its reads (trial 244: 34 lines in 35 ms): one line per period, with the count since the
last, and whatever is left when the consumer closes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["SaidEvery"]


class SaidEvery:
    """Adds up a count and hands it to `say` at most every `every` seconds (`add(0)` says what
    a past period held back; `close()` what is left). Thread-safe: a stop closes it while a
    read may add."""

    __slots__ = ("_at", "_every", "_lock", "_say", "_unsaid")

    def __init__(self, say: Callable[[int], None], every: float) -> None:
        self._say = say
        self._every = every
        self._unsaid = 0
        self._at = 0.0  # the first is said at once
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count `n` more; say the count if the period since the last line has passed."""
        with self._lock:
            self._unsaid += n
            if not self._unsaid:
                return
            now = time.monotonic()
            if now < self._at:
                return
            self._at = now + self._every
            n, self._unsaid = self._unsaid, 0
        self._say(n)

    def close(self) -> None:
        """Say what was not said yet, if anything."""
        with self._lock:
            n, self._unsaid = self._unsaid, 0
        if n:
            self._say(n)
