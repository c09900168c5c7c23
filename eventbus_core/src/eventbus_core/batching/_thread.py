"""`ThreadDriver`: a daemon thread drains the batcher (sync apps: WSGI, scripts, threads).

The thread waits `linger` between cycles while traffic flows; after `DEEP_SLEEP_AFTER` seconds
without any it sleeps until a publisher wakes it, so an idle bus costs nothing. Every wake-up
takes the GIL from the publishing threads, which is why the wakes are so few (and why an app on
an event loop is better served by `LoopDriver`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

from eventbus_core.batching._fork import warn_of_thread_before_c_fork

if TYPE_CHECKING:
    from eventbus_core.batching._batcher import Batcher

__all__ = ["DEEP_SLEEP_AFTER", "ThreadDriver"]

DEEP_SLEEP_AFTER: Final = 0.05  # seconds of silence before the thread needs a publisher's wake
_ASKED_PER_LINGER: Final = 32
"""Publishes a lingering thread asks whether they run on a loop that would take over: each
costs a `check_fork()` system call, so a bounded number per linger, never every publish of a
sync app (beside 4 busy threads the loop took over within 13 of its publishes; asking 8 it took
up to 115, review 227)."""


class ThreadDriver:
    """Drains `batcher` on a daemon thread until it is closed and empty, or retired."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._wake = threading.Event()
        self._retired = False
        self._deep = False  # in a deep sleep: the next wake may hand over to a loop
        self._probing = False  # lingering with `_sleeping` set: a loop's publish may take over
        self._asked = 0  # publishes asked in this probe whether they run on a loop
        self._thread = threading.Thread(target=self._run, name=batcher.thread_name, daemon=True)

    def start(self) -> None:
        warn_of_thread_before_c_fork(self._batcher.label)
        self._batcher._sleeping = False  # a new thread runs a cycle first: no wake needed
        self._thread.start()

    def kick(self, urgent: bool = False) -> bool:
        """Wake the thread (at once, `urgent` or not); False when it should hand over instead
        (a loop woke it from a deep sleep, or it has ended)."""
        b = self._batcher
        if self._retired or not self._thread.is_alive():
            return not self._retired and self._thread.ident is None  # True: about to start
        if self._deep and b.wants_loop(self):
            return False
        if self._probing:
            # One of this linger's first publishes: a loop's takes over (still probing, so
            # that `_select()` asking again gets the same answer); any other leaves the thread
            # to its linger, unwoken (its batching is unchanged). Several are asked, not only
            # the first: beside threads publishing more often than the loop, the loop rarely
            # made the first, and kept a thread draining for over a second (trial 223).
            if b.wants_loop(self):
                return False
            if b.buffered > b._high_water:
                self._probing = False
                self.wake()  # past half full: the wake a publish asks for then
                return True
            self._asked += 1  # unlocked: a count off by one between threads changes nothing
            if self._asked >= _ASKED_PER_LINGER:
                self._probing = False
                b._sleeping = False
            return True
        self.wake()
        return True

    def wake(self) -> None:
        """Wake the thread, whoever calls."""
        b = self._batcher
        b._kicked = True
        b._sleeping = False
        self._wake.set()

    def drain_here(self) -> bool:
        """A thread drains in its own cycles only (`Batcher.drain_now()` then wakes it)."""
        return False

    def retire(self) -> None:
        """End the thread after the cycle it is in, if any."""
        self._retired = True
        self._wake.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def waits_for_flush(self) -> bool:
        """flush() waits for this thread (it drains while flush() waits)."""
        return self._thread.is_alive() and not self._retired

    def _run(self) -> None:
        b = self._batcher
        client = b.client
        last_activity = time.monotonic()
        while True:
            with b.cycle_lock:
                if self._retired or b.abandoned:
                    return
                moved = b.run_cycle()
            now = time.monotonic()
            if moved:
                last_activity = now
            b.notify_flush()
            due = client.next_due(now)
            if b.closed and not b.drainable() and due is None:
                if b.on_thread_exit is not None:
                    b.on_thread_exit()
                b.notify_flush()
                return
            if b.drainable():
                continue
            if due is None and now - last_activity >= DEEP_SLEEP_AFTER:
                self._deep_sleep()
                last_activity = time.monotonic()
                continue
            wait = b.linger if due is None else min(b.linger, due)
            self._wake.clear()
            b._kicked = False
            # Under steady traffic the thread never sleeps deeply, and only a deep sleep's wake
            # handed over to a loop: one publish from a worker thread before the loop's first
            # kept the bus on the thread for good. So each linger asks for one kick (the next
            # publish's), which a publisher on a running loop answers by taking over. Not with
            # a retry due: that waits in this thread's client.
            probe = due is None and b.path != "thread"
            if probe:
                self._asked = 0
                self._probing = True
                b._sleeping = True
            if not b.drainable() and not b.closed and not self._retired:
                self._wake.wait(wait)
            if probe:
                self._end_probe()

    def _end_probe(self) -> None:
        self._probing = False
        b = self._batcher
        with b._driver_lock:
            # A loop that took over meanwhile owns `_sleeping` now: leave it to that driver.
            if b._driver is self and not self._retired:
                b._sleeping = False

    def _deep_sleep(self) -> None:
        # Order matters: publish() appends first and checks _sleeping after, so one of the two
        # sides always sees the other.
        b = self._batcher
        self._wake.clear()
        self._deep = True
        b._sleeping = True
        if b.buffered or b.closed or self._retired:
            b._sleeping = False
            self._deep = False
            return
        self._wake.wait()
        # The waker cleared _sleeping (a retiring thread leaves it to the next driver).
        self._deep = False
