"""Subscriptions to what is in Redis: one background thread per bus follows the log for them.

`Tailer` holds each subscription's position and moves new events into its buffer in batches;
subclasses say how to read what is new after a position and how to wait for more. A subscriber
whose buffer is full is simply not read for: the events wait in Redis, so a slow consumer loses
nothing unless the log is trimmed past it, and then it is told (a `Gap`), never skipped silently.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventbus_core import Subscription, get_logger
from eventbus_core.batching import warn_of_thread_before_c_fork
from eventbus_redis._client import TRANSIENT_ERRORS, Backoff, safe_error
from eventbus_redis._config_errors import is_not_a_counter, is_wrong_type
from eventbus_redis._redis_subscription import Gap, RedisSubscription

__all__ = ["Cursor", "Tailer"]

log = get_logger("eventbus.redis")

_STUCK_AFTER = 0.25  # seconds a full buffer may stay full during stop before we give up on it
_COUNT_TIMEOUT = 0.25  # seconds a close waits for Redis to count what it left behind, per step


def _place(cursor: Cursor) -> dict[str, Any]:
    """What `unhanded()` counts from: the cursor's state, with its position."""
    return {**cursor.extra, "position": cursor.position}


@dataclass(eq=False)
class Cursor:
    """A subscription and where it stands in the log (`position` is backend-specific)."""

    sub: RedisSubscription
    position: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Tailer:
    """Background thread that moves new events from Redis into subscriptions.

    Subclasses read and wait; this class runs the thread, keeps each subscription's `Cursor`,
    and ends them all at `stop()`. Handing events to subscriptions (`deliver()`) happens under
    one lock, which `stop()` and `fork()` take too: a subscription is never handed events after
    it was ended, and a forked child never sees a position moved without its events.

    Args:
        name: Thread name.
        poll: Longest wait between two looks at Redis when nothing wakes the thread earlier.
        chunk: Most events read per subscription per round trip.
        wrong_type: What to say when Redis answers WRONGTYPE: the bus's key setting names a
            key that holds another type of value (`wrong_type_hint`).
    """

    def __init__(
        self,
        *,
        name: str,
        poll: float = 0.5,
        chunk: int = 500,
        wrong_type: str = "",
        on_undecodable: Callable[[int], None] | None = None,
    ) -> None:
        self._name = name
        self._wrong_type = wrong_type
        self._poll = poll
        self.chunk = chunk
        self._cursors: tuple[Cursor, ...] = ()
        self._stop_at: float | None = None
        self._behind: Callable[[Cursor], int] | None = None
        self._final = False
        self.state = "idle"
        self.last_error: str | None = None
        self.undecodable = 0
        self._on_undecodable = on_undecodable  # the bus's count
        self._closed_subs: list[RedisSubscription] = []  # for their `trimmed`
        self.gaps = 0
        self._new_thread_state()
        warn_of_thread_before_c_fork(self._name)
        self._thread.start()

    def _new_thread_state(self) -> None:
        self._lock = threading.Lock()  # membership
        self.delivering = threading.Lock()  # handing events over, against stop() and fork()
        self._wake = threading.Event()
        self._progress = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)

    def skip_undecodable(self, sub: RedisSubscription, bad: int, where: str) -> None:
        """Count `bad` entries read for `sub` that do not decode as events (they stay in the
        log; `where` says where the first is): in this tailer's and the bus's figures, and in
        the subscription's, which says so (a dispatcher's lane on the LIST log skipped them
        with no figure and no line, trial 225). Called while `delivering`."""
        self.undecodable += bad
        if self._on_undecodable is not None:
            self._on_undecodable(bad)
        sub.count_undecodable(bad, where)

    # -------------------------------------------------------------------- subclass interface

    def now(self) -> tuple[Any, dict[str, Any]]:
        """Return where a new subscriber starts ("now") and its initial cursor state."""
        raise NotImplementedError

    def begin(self, cursor: Cursor) -> None:
        """Place a cursor that has no position yet at "now" (Redis was down at subscribe)."""
        position, extra = self.now()
        with self.delivering:
            cursor.position = position
            cursor.extra.update(extra)

    def read(self, cursor: Cursor, max_items: int) -> bool:
        """Hand `cursor.sub` up to `max_items` new events; return True if anything moved.

        Read from Redis first, then hand over inside `with self.delivering:`, returning at once
        if `self.ended` by then."""
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for new events in Redis (or a wake-up)."""
        self._pause(timeout)

    def prepare(self) -> None:
        """Set up what `wait()` needs (e.g. a pub/sub subscription) before each look."""

    def reset_connection(self) -> None:
        """Drop connection state after an error (re-established on the next look)."""

    def interrupt(self) -> None:
        """Cut short a wait on Redis from another thread, without network I/O (best effort)."""

    def forget_connection(self) -> None:
        """In a forked child: drop connection state without touching the parent's sockets."""

    @property
    def ended(self) -> bool:
        """True once `stop()` ended the subscriptions: hand nothing over any more."""
        return self._final

    @staticmethod
    def offer(cursor: Cursor, events: list[Any]) -> int:
        """Hand `events` to the cursor's subscription; what does not fit counts as dropped for
        it (its buffer is full). Returns how many it took. Call inside `delivering`."""
        sub = cursor.sub
        taken = sub.offer(events) if events else 0
        if taken < len(events):
            sub.count_dropped(len(events) - taken)
        return taken

    # --------------------------------------------------------------------------- membership

    def add(
        self, sub: RedisSubscription, position: Any, extra: dict[str, Any] | None = None
    ) -> None:
        """Follow the log for `sub`, starting after `position` (None: from "now" once known);
        `extra` is backend-specific cursor state."""
        with self._lock:
            self._cursors = (*self._cursors, Cursor(sub, position, dict(extra or {})))
        self._wake.set()

    def remove(self, sub: Subscription) -> int:
        """Stop following for `sub`, and count as dropped for it what the backend holds past
        what it was handed (`unhanded`): it ends without those events, and a new subscription
        starts from now. Returns how many. (A dispatcher stopped behind its sink left them in
        Redis counted nowhere, trial 175.)"""
        with self._lock:
            gone = [c for c in self._cursors if c.sub is sub]
            self._cursors = tuple(c for c in self._cursors if c.sub is not sub)
            if gone:  # its gaps leave the live sum: the bus's figure keeps them (review 220)
                self._closed_subs.append(gone[0].sub)
        places: list[tuple[RedisSubscription, dict[str, Any]]] = []
        with self.delivering:
            for cursor in gone:
                # A read under way hands it nothing from now on: what it took from Redis stays
                # past this place, counted once (review 181 found it counted twice).
                cursor.extra["removed"] = True
                if cursor.position is not None and not cursor.sub.finished:
                    places.append((cursor.sub, _place(cursor)))
        counts = [self.behind_at_end(place, _COUNT_TIMEOUT) for _, place in places]
        missed = sum(n[0] for n in counts if n is not None)
        if missed:
            sub.dropped += missed
        for (followed, place), n in zip(places, counts, strict=True):
            if n is not None and n[1]:
                self._report_trimmed(followed, place, n[1])
        if None in counts:
            sub.uncounted_at_close = True  # said by the bus, and by a dispatcher's exit
        return missed

    @property
    def closed_trimmed(self) -> int:
        """`trimmed` of the subscriptions closed and no longer followed (their gaps stay in
        the bus's figure, which never goes down: trial 219, review 220)."""
        return sum(s.trimmed for s in self._closed_subs)

    counts_unhanded = False
    """True where `behind_at_end()` (and so `unhanded()`) counts (the LIST log, streams); else
    they say 0 whatever the backend holds."""

    lag_from_unhanded = False
    """True where `unhanded()` serves a metrics scrape's lag (the LIST log); a stream's count
    (Redis 7's `entries-added`, less what the subscription read) is asked at a close or stop
    only."""

    def unhanded(self, place: dict[str, Any], timeout: float) -> int | None:
        """How many events the backend holds past a cursor's `place` (its `extra`, and its
        `position` under that key), asked within `timeout` seconds: `behind_at_end()`'s first
        figure (a backend may answer it more cheaply); None when it cannot tell."""
        behind = self.behind_at_end(place, timeout)
        return None if behind is None else behind[0]

    def behind_at_end(self, place: dict[str, Any], timeout: float) -> tuple[int, int] | None:
        """What a subscription ending at `place` never gets: `(held, trimmed)`, the events the
        backend holds past it and those it lost past it before they were read (trimmed,
        expired), as far as it can tell them (0 when it cannot); `(0, 0)` by default. None when
        Redis does not answer within `timeout`."""
        return 0, 0

    def _report_trimmed(self, sub: RedisSubscription, place: dict[str, Any], n: int) -> None:
        """Record the `n` events lost past `place` before the subscription, now ending, read
        them: a gap, as a read would have found (trial 216: counted nowhere)."""
        reason = "trimmed (or expired) before it was read, found as the subscription ended"
        sub.report_gap(Gap(self.log_id_of(place), n, reason), advice=self.trim_advice())
        self.gaps += 1

    def log_id_of(self, place: dict[str, Any]) -> int:
        """The LogID a cursor's `place` stands after (for a `Gap`)."""
        return 0

    def trim_advice(self) -> str:
        """What to do about events trimmed before they were read."""
        return ""

    def unhanded_to(self, sub: RedisSubscription, timeout: float) -> int | None:
        """A metrics scrape's lag for the followed `sub`: `unhanded()` past its place, plus
        what it holds handed and not yet read (a dispatcher's lane reads slower than its
        subscription is filled: 197 events sat in it with a lag of 0, trial 222). None when it
        is not followed or has no place yet (Redis was down at subscribe)."""
        cursor = next((c for c in self._cursors if c.sub is sub), None)
        if cursor is None or cursor.position is None:
            return None
        with self.delivering:  # a place whose events were all handed over, not half
            place = _place(cursor)
            held = sub.qsize()
        behind = self.unhanded(place, timeout)
        return None if behind is None else behind + held

    @property
    def subscriptions(self) -> tuple[RedisSubscription, ...]:
        """The followed subscriptions."""
        return tuple(c.sub for c in self._cursors)

    # ---------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        try:
            self._follow()
        finally:
            with contextlib.suppress(Exception):
                self.reset_connection()  # release the waiting connection, if any
            if self._final:
                # A read that returned after stop() set "stopped" set "connected" again: the
                # stats said so of a thread that had ended (trial 123).
                self.state = "stopped"
            self._progress.set()

    def _follow(self) -> None:
        backoff = Backoff()
        while not self._final:
            try:
                moved, blocked = self._look()
                backoff.reset()
                if not self._final:
                    self.state = "connected"
            except Exception as exc:
                if self._failed(exc, backoff):
                    return
                continue
            self._progress.set()
            if self._stop_at is not None:
                if moved:
                    continue
                if self._caught_up() or time.monotonic() >= self._stop_at:
                    return
                self._pause(0.01)  # the writer's last batch may still be on its way
                continue
            if moved:
                continue
            try:
                self.wait(0.02 if blocked else self._poll)
            except Exception as exc:
                if self._failed(exc, backoff):
                    return

    def _failed(self, exc: Exception, backoff: Backoff) -> bool:
        """Handle a failed look or wait: report it, drop the connection, back off. Returns True
        when the thread should end (stopping: `stop()` accounts for what was not handed over;
        the connection may have been cut on purpose, or the application closed its client)."""
        unexpected = not isinstance(exc, TRANSIENT_ERRORS) and self._stop_at is None
        if unexpected and safe_error(exc) != self.last_error:  # a bug must not end them all
            if is_not_a_counter(exc):
                # Redis's own words name the counter (the list log's scripts say it).
                log.error("eventbus redis subscriber: %s; retrying", safe_error(exc))
            elif is_wrong_type(exc) and self._wrong_type:
                # A setting, not a bug: no traceback, and the variable to change.
                log.error("eventbus redis subscriber: %s; retrying", self._wrong_type)
            else:
                log.exception("eventbus redis subscriber thread failed a cycle; retrying")
        self._note_error(exc)
        with contextlib.suppress(Exception):
            self.reset_connection()
        if self._stop_at is not None:
            return True
        # stop() during the pause wakes it: one more look then hands over what Redis holds
        # by now (it may be back), until stop()'s deadline.
        self._pause(backoff.next())
        return False

    def _pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, or until woken (a new subscriber, `stop()`), and take the
        wake-up: a `wait()` on pub/sub never clears it, and a wake-up left set would make every
        later pause return at once, the backoff of an outage included (a core spun at 100 %)."""
        self._wake.wait(seconds)
        self._wake.clear()

    def _look(self) -> tuple[bool, bool]:
        self.prepare()
        moved = blocked = False
        for cursor in self._cursors:
            if cursor.sub.finished or self._final:
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
        if self._stop_at is not None:
            self.last_error = message  # stopping (its connection may have been cut): no alarm
            return
        if self.state != "reconnecting" or message != self.last_error:
            log.warning("eventbus redis subscriber thread cannot read (%s); retrying", message)
        self.state = "reconnecting"
        self.last_error = message

    def _caught_up(self) -> bool:
        """True once every subscription was handed what `stop()` waits for, or ended, or has a
        buffer that stayed full a while (its consumer is not reading)."""
        behind = self._behind
        if behind is None:
            return True
        now = time.monotonic()
        with self.delivering:
            # Each looked at (a list, not all()'s first False): a full buffer's clock starts for
            # every subscription at once, not one after another (trial 219: 0.25 s each, twelve
            # took a whole stop(2.0)).
            done = [c.sub.finished or behind(c) <= 0 or self._stuck(c, now) for c in self._cursors]
        return all(done)

    @staticmethod
    def _stuck(cursor: Cursor, now: float) -> bool:
        """True once a subscription's buffer has stayed full for a while during stop: its
        consumer is not reading, so waiting longer for it would only delay the others."""
        if cursor.sub.space() > 0:
            cursor.extra.pop("full_since", None)
            return False
        since: float = cursor.extra.setdefault("full_since", now)
        return now - since >= _STUCK_AFTER

    def stop(self, behind: Callable[[Cursor], int], deadline: float) -> None:
        """Deliver until `behind(cursor)` (events still to hand over) is 0 for every
        subscription, or its buffer stays full, or `deadline` (`time.monotonic()`) passes; then
        end them all. Returns by the deadline.

        What a subscription could not be handed is counted as dropped for it (with a warning
        that says why: its consumer did not read, or Redis did not answer in time), and so is
        what other writers put in Redis past it, where the backend counts it (`unhanded()`,
        asked within what is left of the deadline, as `remove()` asks at a close): a
        subscription left open at stop() is closed behind the log as one closed by hand is
        (trial 213: 2,000 events of another process went uncounted at stop()).
        """
        self._behind = behind
        self._stop_at = deadline
        self._wake.set()
        if threading.current_thread() is not self._thread:
            while not self._caught_up() and self._thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._progress.wait(min(remaining, 0.05))
                self._progress.clear()
        ended: list[tuple[Cursor, dict[str, Any], int]] = []
        with self.delivering:
            self._final = True
            for cursor in self._cursors:
                missed = max(0, behind(cursor))
                if cursor.sub.finished:
                    continue
                if self.counts_unhanded and cursor.position is not None:
                    # Counted below, by what Redis holds past it and lost past it (trial 219:
                    # this bus's events trimmed before they were handed were filed as dropped
                    # for a full buffer); this bus's own count where Redis does not say. Ended
                    # once counted: a reader sees final figures once it finds it finished.
                    ended.append((cursor, _place(cursor), missed))
                    continue
                self._count_missed(cursor.sub, missed)
                cursor.sub.finish()
        if ended:
            try:
                self._count_behind_at_stop(ended, deadline)
            finally:
                for cursor, _, _ in ended:
                    cursor.sub.finish()
        self.state = "stopped"
        self._wake.set()
        self.interrupt()  # a thread still waiting on Redis ends now rather than at its poll
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            # Usually it ends at once; one blocked in a read on Redis ends when that returns,
            # and touches no subscription then: not worth waiting long for.
            self._thread.join(max(0.0, min(deadline - time.monotonic(), 0.5)))

    def _count_missed(self, sub: RedisSubscription, missed: int, *, counted: bool = False) -> None:
        """Count as dropped for `sub` the `missed` events this bus wrote and did not hand it
        (`counted`: Redis's count has them already), saying why: its consumer did not read, or
        Redis did not answer in time."""
        if missed <= 0:
            return
        if sub.space() <= 0:
            if not counted:
                sub.count_dropped(missed)  # its consumer is not reading
            return
        if not counted:
            sub.dropped += missed  # Redis did not answer in time: not the consumer's doing
        log.warning(
            "eventbus redis: stop() ended subscription %s before it was handed %d event(s) this "
            "bus wrote, because Redis did not answer in time (counted in its dropped)",
            sub.name,
            missed,
        )

    def _count_behind_at_stop(
        self, ended: list[tuple[Cursor, dict[str, Any], int]], deadline: float
    ) -> None:
        """Count for each subscription `stop()` ended what Redis holds past it (`dropped`) and
        lost past it before it was read (a gap), whoever wrote it; within what is left of
        `deadline`. Where Redis does not say, this bus's own events not handed (`missed`) are
        counted, the subscription is marked `uncounted_at_close`, and that is said."""
        uncounted: list[str | None] = []
        for cursor, place, missed in ended:
            sub = cursor.sub
            left = deadline - time.monotonic()
            # Once Redis did not answer, the others are not asked: each would wait its own
            # 0.25 s on a frozen server (review 217: 3 s for 12 subscriptions).
            asked = left > 0 and not uncounted
            behind = self.behind_at_end(place, min(_COUNT_TIMEOUT, left)) if asked else None
            if behind is None or sum(behind) < missed:  # silent, or not the log it was reading
                self._count_missed(sub, missed)
                if behind is None:
                    sub.uncounted_at_close = True
                    uncounted.append(sub.name)
                continue
            held, trimmed = behind
            self._count_missed(sub, missed, counted=True)  # the reason said, if not a full buffer
            if held:
                if sub.space() <= 0:
                    sub.count_dropped(held)  # its consumer is not reading
                else:
                    sub.dropped += held
            if trimmed:
                self._report_trimmed(sub, place, trimmed)
            others = held + trimmed - missed
            if others:
                log.info(
                    "eventbus redis subscription %s ended at stop() %d event(s) of other "
                    "writers behind the log: it never received them (counted in its dropped, "
                    "or as trimmed; what Redis still holds of them can be replayed with "
                    "eventbus replay)",
                    sub.name,
                    others,
                )
        if uncounted:
            log.warning(
                "eventbus redis: stop() ended subscription(s) %s without Redis counting what "
                "other writers put past them (it did not answer in time, or, for a stream, keeps "
                "no count of entries added, before Redis 7): any such events are counted "
                "nowhere (they stay in Redis, for eventbus replay)",
                ", ".join(str(name) for name in uncounted),
            )

    # ---------------------------------------------------------------------------------- fork

    def before_fork(self) -> None:
        """Hold the hand-over and membership locks across `fork()` (bounded waits)."""
        self._fork_held = [
            lock for lock in (self.delivering, self._lock) if lock.acquire(timeout=1.0)
        ]

    def after_fork_in_parent(self) -> None:
        """Release what `before_fork()` took."""
        for lock in getattr(self, "_fork_held", []):
            lock.release()
        self._fork_held = []

    def after_fork_in_child(self) -> None:
        """Subscriptions made before the fork keep receiving in the child: a new thread reads
        Redis for the child's copies from where they stood (events already in a buffer at the
        fork are in both processes' copies). Nothing to do once stopped."""
        self._fork_held = []
        self.forget_connection()
        for cursor in self._cursors:
            cursor.sub._after_fork_in_child()
        self._new_thread_state()
        if not self._final and self._stop_at is None:
            self._thread.start()
