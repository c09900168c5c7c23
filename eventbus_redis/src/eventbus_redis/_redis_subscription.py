"""`RedisSubscription`: a subscription fed from Redis, which also reports `Gap`s: events it can
no longer receive because Redis trimmed (or lost) them before it read them.

Such events are counted in `trimmed`, apart from `dropped` (the subscription's own full buffer),
and the warning says what to do about it: keep a longer log, or read faster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventbus_core import Subscription, get_logger

__all__ = ["Gap", "RedisSubscription"]

log = get_logger("eventbus.redis")


@dataclass(frozen=True, slots=True)
class Gap:
    """Events a subscriber can no longer receive.

    Attributes:
        after: The last LogID the subscriber had received (0 if none).
        missed: How many LogIDs were skipped, or None when unknown (Redis lost its data).
        reason: Why, in words.
    """

    after: int
    missed: int | None
    reason: str


class RedisSubscription(Subscription):
    """A `Subscription` fed from Redis that also reports gaps.

    Attributes:
        gaps: Every `Gap` met so far, oldest first.
        trimmed: Events known to be missed in those gaps (Redis trimmed or deleted them before
            this subscription read them). Counted apart from `dropped`, which is about this
            subscription's own buffer being full.
        last_log_id: LogID of the newest event handed to this subscription.
    """

    def __init__(
        self,
        capacity: int,
        *,
        name: str | None = None,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        super().__init__(capacity, name=name, on_close=on_close)
        self.gaps: list[Gap] = []
        self.trimmed = 0
        self.last_log_id = 0
        # Set by a bus whose log can count what it holds past this subscription's place.
        self.count_unhanded: Callable[[], int | None] | None = None

    @property
    def missed(self) -> int:
        """`trimmed`: the events known to be missed in the gaps."""
        return self.trimmed

    @property
    def missed_unknown(self) -> int:
        """The gaps of unknown size (Redis lost its data): a dispatcher's exit counted none of
        them (trial 193)."""
        return sum(1 for gap in self.gaps if gap.missed is None)

    def backlog(self) -> dict[str, int | None]:
        """The `Backlog` of a dispatcher's lane that reads this subscription: `lag`, the events
        the log holds that this subscription has not been handed yet, and those it holds and
        its reader has not read (one bounded round trip; None where the log cannot count them,
        or Redis does not answer); `pending` is None (a subscription acknowledges nothing). The
        LIST log's lanes had no lag in the metrics."""
        count = self.count_unhanded
        return {"lag": count() if count is not None else None, "pending": None}

    def report_gap(self, gap: Gap, *, advice: str = "") -> None:
        """Record `gap` (backend thread only) and warn, at most every few seconds.

        `advice` says what the user can do about it (e.g. keep a longer log)."""
        self.gaps.append(gap)
        if gap.missed:
            self.trimmed += gap.missed
        if not self._warning_due("gap"):
            return
        log.warning(
            "eventbus redis subscription %s missed %s event(s) after LogID %d: %s%s "
            "(%d gap(s), %d event(s) missed so far)",
            self.name,
            "an unknown number of" if gap.missed is None else gap.missed,
            gap.after,
            gap.reason,
            f"; {advice}" if advice else "",
            len(self.gaps),
            self.trimmed,
        )
