"""Subscriptions to what is in Redis: one background thread per bus follows the log for them.

`Tailer` holds each subscription's position and moves new events into its buffer in batches;
subclasses say how to read what is new after a position and how to wait for more. A subscriber
whose buffer is full is simply not read for: the events wait in Redis, so a slow consumer loses
nothing unless the log is trimmed past it, and then it is told (a `Gap`), never skipped silently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventbus_core import Subscription, get_logger
from eventbus_redis._client import TRANSIENT_ERRORS, Backoff, safe_error

__all__ = ["Cursor", "Gap", "RedisSubscription", "Tailer"]

log = get_logger("eventbus.redis")

_STUCK_AFTER = 0.25  # seconds a full buffer may stay full during stop before we give up on it


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
        gaps: Every `Gap` met so far, oldest first; the missed events are also counted in
            `dropped` (when their number is known).
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
        self.last_log_id = 0

    def report_gap(self, gap: Gap) -> None:
        """Record `gap` (backend thread only)."""
        self.gaps.append(gap)
        if gap.missed:
            self.count_dropped(gap.missed)
        log.warning(
            "eventbus redis subscription %s missed %s event(s) after LogID %d: %s",
            self.name,
            "an unknown number of" if gap.missed is None else gap.missed,
            gap.after,
            gap.reason,
        )


@dataclass(eq=False)
class Cursor:
    """A subscription and where it stands in the log (`position` is backend-specific)."""

    sub: RedisSubscription
    position: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Tailer:
    """Background thread that moves new events from Redis into subscriptions.

    Args:
        name: Thread name.
        poll: Longest wait between two looks at Redis when nothing wakes the thread earlier.
        chunk: Most events read per subscription per round trip.
    """

    def __init__(self, *, name: str, poll: float = 0.5, chunk: int = 500) -> None:
        self._poll = poll
        self.chunk = chunk
        self._cursors: tuple[Cursor, ...] = ()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_at: float | None = None
        self._behind: Callable[[Cursor], int] | None = None
        self.state = "idle"
        self.last_error: str | None = None
        self.undecodable = 0
        self.gaps = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------- subclass interface

    def start_position(self) -> Any:
        """Return the position of "now" (what a new subscriber starts after)."""
        raise NotImplementedError

    def begin(self, cursor: Cursor) -> None:
        """Place a cursor that has no position yet at "now" (Redis was down at subscribe)."""
        cursor.position = self.start_position()

    def read(self, cursor: Cursor, max_items: int) -> bool:
        """Hand `cursor.sub` up to `max_items` new events; return True if anything moved."""
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for new events in Redis (or a wake-up)."""
        self._wake.wait(timeout)
        self._wake.clear()

    def prepare(self) -> None:
        """Set up what `wait()` needs (e.g. a pub/sub subscription) before each look."""

    def reset_connection(self) -> None:
        """Drop connection state after an error (re-established on the next look)."""

    # --------------------------------------------------------------------------- membership

    def add(
        self, sub: RedisSubscription, position: Any, extra: dict[str, Any] | None = None
    ) -> None:
        """Follow the log for `sub`, starting after `position` (None: from "now" once known);
        `extra` is backend-specific cursor state."""
        with self._lock:
            self._cursors = (*self._cursors, Cursor(sub, position, dict(extra or {})))
        self._wake.set()

    def remove(self, sub: Subscription) -> None:
        """Stop following for `sub`."""
        with self._lock:
            self._cursors = tuple(c for c in self._cursors if c.sub is not sub)

    @property
    def subscriptions(self) -> tuple[RedisSubscription, ...]:
        """The followed subscriptions."""
        return tuple(c.sub for c in self._cursors)

    # ---------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        try:
            self._follow()
        finally:
            self.reset_connection()  # release the pub/sub connection, if any

    def _follow(self) -> None:
        backoff = Backoff()
        while True:
            try:
                moved, blocked = self._look()
                backoff.reset()
                self.state = "connected"
            except TRANSIENT_ERRORS as exc:
                self._note_error(exc)
                self.reset_connection()
                if self._stopping_done(force=False):
                    return
                self._wake.wait(backoff.next())
                continue
            except Exception as exc:  # a bug must not end every subscription silently
                log.exception("eventbus redis subscriber thread failed a cycle")
                self._note_error(exc)
                moved, blocked = False, False
                time.sleep(self._poll)
            if self._stopping_done(force=False):
                return
            if moved:
                continue
            if self._stop_at is not None:
                self._wake.wait(0.01)
                continue
            try:
                self.wait(0.02 if blocked else self._poll)
            except TRANSIENT_ERRORS as exc:
                self._note_error(exc)
                self.reset_connection()
                self._wake.wait(backoff.next())

    def _look(self) -> tuple[bool, bool]:
        self.prepare()
        moved = blocked = False
        for cursor in self._cursors:
            if cursor.sub.finished:
                continue
            if cursor.position is None:
                self.begin(cursor)
                continue
            room = cursor.sub.space()
            if room <= 0:
                blocked = True
                continue
            moved = self.read(cursor, min(room, self.chunk)) or moved
        return moved, blocked

    def _note_error(self, exc: BaseException) -> None:
        message = safe_error(exc)
        if self.state != "reconnecting" or message != self.last_error:
            log.warning("eventbus redis subscriber thread cannot read (%s); retrying", message)
        self.state = "reconnecting"
        self.last_error = message

    def _stopping_done(self, *, force: bool) -> bool:
        if self._stop_at is None:
            return False
        now = time.monotonic()
        if force or now >= self._stop_at:
            return True
        behind = self._behind
        return behind is None or all(
            c.sub.finished or behind(c) <= 0 or self._stuck(c, now) for c in self._cursors
        )

    @staticmethod
    def _stuck(cursor: Cursor, now: float) -> bool:
        """True once a subscription's buffer has stayed full for a while during stop: its
        consumer is not reading, so waiting longer for it would only delay the others."""
        if cursor.sub.space() > 0:
            cursor.extra.pop("full_since", None)
            return False
        since: float = cursor.extra.setdefault("full_since", now)
        return now - since >= _STUCK_AFTER

    def stop(self, behind: Callable[[Cursor], int], timeout: float) -> None:
        """Deliver until `behind(cursor)` (events still to hand over) is 0 for every
        subscription, or its buffer stays full, or `timeout` runs out; then end them all.

        What a subscription could not be handed is counted as dropped for it.
        """
        self._behind = behind
        self._stop_at = time.monotonic() + timeout
        self._wake.set()
        self.interrupt()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout + 0.5)
        for cursor in self._cursors:
            missed = behind(cursor)
            if missed > 0 and not cursor.sub.finished:
                cursor.sub.count_dropped(missed)
            cursor.sub.finish()
        self.state = "stopped"

    def interrupt(self) -> None:
        """Cut short a wait on Redis (best effort)."""
