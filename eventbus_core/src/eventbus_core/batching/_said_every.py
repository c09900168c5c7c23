"""`SaidEvery`: a count that a log line says at most every so many seconds, the rest later.

Some counts grow by the thousand while one line a period is all a log needs: a publish buffer
refusing events under load (trial 215: 34,469 during an outage), a consumer group behind the
stream's MAXLEN losing entries at nearly every read (trial 168: four warnings a second; trial
244: 34 lines in 35 ms). One line per period carries the count since the last one; what a
period held back is said by the next call past it, or by `say_now()` at the end (a flush, a
stop, a consumer's close), whatever the period (trial 216: 2,000 drops in a process's last
second went unsaid).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["SaidEvery"]


class SaidEvery:
    """Adds up a count and hands it to `say(new, total)` at most every `every` seconds: `new`
    since the last line, `total` all counted so far.

    Thread-safe: a drainer, a stopping thread and a reader may count and say at once, and each
    unit is said once.

    Args:
        say: Writes the line.
        every: Seconds between two lines at most; the first is said at once.
    """

    __slots__ = ("_at", "_counted", "_every", "_lock", "_say", "_unsaid")

    def __init__(self, say: Callable[[int, int], None], every: float) -> None:
        self._say = say
        self._every = every
        self._counted = 0
        self._unsaid = 0
        self._at = float("-inf")
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count `n` more (0: only say what a past period held back, if it is over)."""
        with self._lock:
            self._counted += n
            self._unsaid += n
            said = self._take(now_anyway=False)
        if said:
            self._say(*said)

    def reach(self, total: int) -> None:
        """Count up to `total`, a figure kept elsewhere that only grows (a smaller one, read
        earlier by another caller, is already counted). Without a change and with nothing held
        back it takes no lock: a drainer asks at every cycle."""
        if total <= self._counted and not self._unsaid:
            return
        with self._lock:
            if total > self._counted:
                self._unsaid += total - self._counted
                self._counted = total
            said = self._take(now_anyway=False)
        if said:
            self._say(*said)

    def say_now(self) -> None:
        """Say what was not said yet, if anything, whatever the period."""
        with self._lock:
            said = self._take(now_anyway=True)
        if said:
            self._say(*said)

    def after_fork_in_child(self, total: int) -> None:
        """In a forked child: a new lock (the parent's may have been held at the fork), and
        `total`, the count the child inherits, is the parent's to say, not the child's (trial
        221: each of 50 workers said its parent's drops as its own)."""
        self._lock = threading.Lock()
        self._counted = max(self._counted, total)
        self._unsaid = 0

    def _take(self, *, now_anyway: bool) -> tuple[int, int] | None:
        """(new, total) to say now, or None; under the lock."""
        if not self._unsaid:
            return None
        now = time.monotonic()
        if not now_anyway and now < self._at:
            return None
        self._at = now + self._every
        new, self._unsaid = self._unsaid, 0
        return new, self._counted
