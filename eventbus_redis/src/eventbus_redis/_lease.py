"""`Lease`: the writer's identity in Redis and the time limit on applying its batches.

Why: `stop(timeout)` may have to give up on a batch the writer already sent, and count it lost.
Cutting the connection does not stop Redis from applying it: a server that was frozen
(SIGSTOP, a VM pause) with the batch in its socket buffer reads and runs it once it resumes,
even after a TCP reset (measured). So each batch is only valid while the writer's lease lasts:

- The writer stores a new token in `<key>:writer:<id>:lease` with a short expiry (`SET ... PX`,
  one round trip) and, once Redis confirmed it, knows the lease ends by `valid_until` = the time
  it read the reply + `LEASE` on its own clock.
- Every batch names the token and how many milliseconds of the lease must remain; the script
  refuses a batch otherwise (and the transaction WATCHes the lease key, so EXEC fails once it has
  expired). A batch applied with the token extends the lease (`PEXPIRE`).
- A batch sent under token T can therefore only be applied before `valid_until` as known when it
  was sent. At `stop()` the writer also knows its deadline, and asks for enough remaining lease
  that nothing it sends can be applied after the deadline.

A renewal sets a new token, so an older batch still on its way (a retry's first attempt) is
refused when it arrives. Assumes Redis's clock does not jump backwards by more than the slack.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Final

__all__ = ["LEASE", "Lease"]

LEASE: Final = 1.0
"""Seconds a batch may take from the writer's last confirmed write to being applied. A batch that
takes longer (Redis paused or frozen) is refused by Redis and sent again under a new lease."""

_SLACK: Final = 0.02  # seconds: clock-rate differences between client and server, rounding


class Lease:
    """One writer's marker and lease keys under `target`, and what it knows of its lease.

    Attributes:
        marker_key: `<target>:writer:<id>`, the last batch number applied (dedup of retries).
        key: `<target>:writer:<id>:lease`, holding the current token.
        token: The token batches are sent under ("" before the first renewal).
        valid_until: Monotonic time by which Redis has certainly let the lease expire.
        deadline: Monotonic time after which no batch may be applied (set by `stop()`).
    """

    def __init__(self, target: str) -> None:
        self._target = target
        self._renewals = 0
        self.deadline: float | None = None
        self._new_identity()

    def _new_identity(self) -> None:
        self.marker_key = f"{self._target}:writer:{uuid.uuid4().hex}"
        self.key = f"{self.marker_key}:lease"
        self.token = ""
        self.valid_until = 0.0

    def after_fork_in_child(self) -> None:
        """A forked child is another writer: its own marker and lease, nothing confirmed yet."""
        self._new_identity()

    def due(self) -> bool:
        """True when the lease should be renewed before the next batch is sent."""
        return not self.token or time.monotonic() > self.valid_until - LEASE / 2

    def renewal(self) -> tuple[Any, ...]:
        """The command that stores a new token (call `renewed()` once Redis confirmed it)."""
        self._renewals += 1
        return ("SET", self.key, str(self._renewals), "PX", int(LEASE * 1000))

    def renewed(self) -> None:
        """Redis confirmed the last `renewal()`: batches now go under its token."""
        self.confirmed(str(self._renewals), time.monotonic())

    @property
    def renewal_token(self) -> str:
        """The token the last `renewal()` stores: `confirmed()` with it once Redis replied.
        (No batch names it before that: one sent behind the renewal was applied under it by
        a server frozen with both in its buffer, after `stop()`, trial 153.)"""
        return str(self._renewals)

    def confirmed(self, token: str, at: float) -> None:
        """Redis confirmed the renewal that stored `token`; its reply was read at `at`."""
        self.token = token
        self.valid_until = at + LEASE

    def invalidate(self) -> None:
        """Forget the token: the next batch goes under a new one, so a batch still on its way
        under the old token (sent on a connection given up on) is refused when it arrives."""
        self.token = ""

    def extended(self) -> None:
        """Redis confirmed a batch sent under the current token (which extended the lease)."""
        self.valid_until = time.monotonic() + LEASE

    def args(self, batch: int) -> list[Any]:
        """The four leading script arguments: batch, the current token, ms that must remain,
        ms to extend."""
        return [batch, self.token, self.min_remaining_ms(), int(LEASE * 1000)]

    def min_remaining_ms(self) -> int:
        """Milliseconds of lease Redis must still see when it applies a batch sent now: so
        that it cannot be applied after `deadline`."""
        if self.deadline is None:
            return 1
        return max(1, math.ceil((self.valid_until - self.deadline + _SLACK) * 1000))

    def allows_transaction(self) -> bool:
        """True if a WATCH/MULTI batch (bounded by the lease's expiry only) cannot be applied
        after the deadline."""
        return self.deadline is None or self.valid_until + _SLACK <= self.deadline

    def extension(self) -> tuple[Any, ...]:
        """The command a transaction adds to extend the lease."""
        return ("PEXPIRE", self.key, int(LEASE * 1000))
