"""`LoopDriver`: the publishing event loop drains the batcher, with no thread at all.

A loop timer does the work a thread would: the first publish after a quiet spell arms
`loop.call_later(linger, drain)` (the driver's very first drain runs at once instead, so that a
backend's connection opens while events gather), and a buffer past half full asks for
`call_soon(drain)`.
Each drain runs one cycle on the loop (backend work that never waits: fan-out to memory
subscribers, or an asyncio write) and re-arms itself while events keep coming, so a saturated
server pays for one timer callback per `linger` instead of a thread's GIL hand-offs.

A publish from another thread reaches the loop with `call_soon_threadsafe` (only then: it writes
to the loop's self-pipe). When the loop goes away the batcher switches to a thread, which drains
what is left:

- the loop is shutting down (`asyncio.run()` and `asyncio.Runner` cancel every task as they
  end, the guard task among them): the guard also waits, up to the batcher's `exit_timeout`,
  until the thread has delivered what was accepted, as the process may end with the loop;
- a wake finds the loop closed, or no longer running;
- the loop watch finds it so, with events accepted and not delivered: a loop driven by
  `run_until_complete()` between two jobs, or closed by hand, cancels no task, and no wake may
  come (the events published before are all there is). One daemon thread per process looks at
  every loop that drains, every `_WATCH_EVERY` seconds, and does nothing else: its few wakes a
  second cost a saturated server nothing it could measure;
- `close()` and `flush()` never wait for the loop: they drain in the caller's thread.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final

from eventbus_core.batching._fork import at_fork

if TYPE_CHECKING:
    from eventbus_core.batching._batcher import Batcher

__all__ = ["LoopDriver"]

_BUSY_RETRY = 0.001  # seconds before a drain retries when another thread holds the cycle
# Seconds between two looks of the loop watch. Each look takes the GIL from a busy loop for a
# moment: under callgrind, publish() on a loop counted 2,448 instructions a call with looks every
# 0.2 s, and 2,267 both every 0.5 s and with no watch (callgrind_publish.py, memory-asyncio).
_WATCH_EVERY: Final = 0.5


class LoopDriver:
    """Drains `batcher` with timers on `loop` (the loop the choosing publish() ran on)."""

    def __init__(self, batcher: Batcher, loop: asyncio.AbstractEventLoop) -> None:
        self._batcher = batcher
        self.loop = loop
        self._handle: asyncio.Handle | None = None
        self._urgent = False
        self._retired = False
        self._in_cycle = False
        self._guard: asyncio.Task[None] | None = None
        # The first drain runs at once, not after `linger`: a backend that must connect first
        # (the Redis writer: a connection, its lease, its script) does so while the next events
        # gather. Lingering first cost a server flooded from its first request (uvicorn on
        # uvloop, 12,000 requests/s) up to 270 events of its first tenth of a second, dropped
        # (the Redis log, the default buffer of 1,000: 270, 241 and 0 in three runs; 0 in six
        # runs since, on a quiet machine).
        self._fresh = True
        # The last drain found events the backend could not take (its write still out, or a
        # backoff): only the backend's own wake, or the timer, drains again (see `_drain`).
        self._stalled = False

    def start(self) -> None:
        """Arm the first drain and the shutdown guard (called on the loop's thread)."""
        self._guard = self.loop.create_task(self._watch_shutdown(), name="eventbus-loop-guard")
        # A loop closed without cancelling its tasks must not log the guard as destroyed.
        with contextlib.suppress(AttributeError):
            self._guard._log_destroy_pending = False  # type: ignore[attr-defined]
        _WATCH.add(self)
        self.kick()

    def check_loop(self) -> None:
        """From the loop watch's thread: hand over to a thread if the loop is closed or no
        longer runs while events accepted are not delivered (nothing else would drain them)."""
        if self._retired:
            return
        loop = self.loop
        if (loop.is_closed() or not loop.is_running()) and self._batcher.pending():
            self._batcher.switch_to_thread(self)

    async def _watch_shutdown(self) -> None:
        try:
            await self.loop.create_future()
        except asyncio.CancelledError:
            if not self._retired:
                self._batcher.switch_to_thread(self)
                # The loop is ending, and the process may end with it: deliver what is left
                # first. (uvicorn ends the process before this runs, by re-raising the signal
                # that stopped it; there the middleware's lifespan flush does it.)
                self._batcher.flush_at_exit("its event loop shut down")
            raise

    # ---------------------------------------------------------------------------------- wakes

    def kick(self, urgent: bool = False) -> bool:
        """Ask the loop for a drain (`urgent`: at once, not after `linger`); False when this
        loop can no longer drain (the caller then chooses another driver)."""
        if self._retired:
            return False
        b = self._batcher
        urgent = urgent or self._fresh or b.buffered > b._high_water or b._flush_waiters > 0
        running = asyncio._get_running_loop()
        if self._stalled:
            if running is self.loop:
                # The backend's own wake (its reply came, or its backoff ended; a publish does
                # not kick a stalled drainer): publishes past half full may ask again.
                self._stalled = False
                b._kicked = False
            else:
                # Another thread (a flush() waiting) cannot make a stalled backend take more:
                # a drain at once would find it as busy, and that thread asks every 10 ms.
                urgent = False
        if running is self.loop:
            b._sleeping = False
            if urgent:
                b._kicked = True
            self._schedule(urgent)
            return True
        if running is not None and not self.loop.is_running():
            return False  # this thread runs another loop now; ours is stopped: rebind
        if self.loop.is_closed() or not self.loop.is_running():
            self._batcher.switch_to_thread(self)
            return True
        b._sleeping = False
        if urgent:
            b._kicked = True
        try:
            self.loop.call_soon_threadsafe(self._schedule, urgent)
        except RuntimeError:  # closed since we looked
            self._batcher.switch_to_thread(self)
        return True

    def drain_here(self) -> bool:
        """Run a drain now, when called on this loop outside a drain (`Batcher.drain_now()`);
        False otherwise."""
        if self._retired or self._in_cycle or asyncio._get_running_loop() is not self.loop:
            return False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._drain()
        return True

    def _schedule(self, urgent: bool) -> None:
        """On the loop: arm a drain in `linger` (or at once, when `urgent`) unless one is."""
        if self._retired:
            return
        handle = self._handle
        if handle is not None:
            if not urgent or self._urgent:
                return
            handle.cancel()
        self._urgent = urgent
        if urgent:
            self._handle = self.loop.call_soon(self._drain)
        else:
            self._handle = self.loop.call_later(self._batcher.linger, self._drain)

    def _drain(self) -> None:
        self._handle = None
        self._urgent = False
        self._fresh = False
        self._stalled = False
        if self._retired:
            return
        b = self._batcher
        b._kicked = False
        if not b.cycle_lock.acquire(blocking=False):
            # A flush() or stop() in another thread is draining: never block the loop for it.
            self._handle = self.loop.call_later(_BUSY_RETRY, self._drain)
            return
        try:
            self._in_cycle = True
            moved = b.run_cycle()
        finally:
            self._in_cycle = False
            b.cycle_lock.release()
        b.notify_flush()
        if b.buffered and moved:
            self._schedule(b.buffered > b._high_water)
            return
        due = b.client.next_due(time.monotonic())
        if b.buffered:
            # The backend took nothing: a write of its own is still out (its reply asks for a
            # cycle) or it waits out a backoff (`next_due`). Draining again at once would spin
            # the loop for as long as an outage lasts (a full buffer kept a whole core busy with
            # no request coming in), so the next try waits, and so does a publish past half
            # full (`_kicked`) or a flush() in another thread: only the backend's own wake,
            # on the loop, comes sooner.
            self._stalled = True
            b._kicked = True
            if due is None:
                due = b.linger
        if due is not None:
            self._handle = self.loop.call_later(min(b.linger, max(due, 0.0)), self._drain)
            return
        # Order matters: publish() appends first and checks _sleeping after, so one of the two
        # sides always sees the other.
        b._sleeping = True
        if b.buffered > 0:  # a publish() slipped in before it could see _sleeping
            b._sleeping = False
            self._schedule(False)

    # ------------------------------------------------------------------------------ lifecycle

    def retire(self) -> None:
        """Stop draining on the loop (another driver, or the caller, takes over)."""
        if self._retired:
            return
        self._retired = True
        _WATCH.discard(self)
        if asyncio._get_running_loop() is self.loop:
            self._cancel()
            return
        with contextlib.suppress(RuntimeError):  # a closed loop has nothing left to cancel
            self.loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        guard = self._guard
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()

    def is_current(self) -> bool:
        """True inside this driver's own cycle."""
        return self._in_cycle and asyncio._get_running_loop() is self.loop

    def waits_for_flush(self) -> bool:
        """Whether flush() waits for the loop: only when cycles may block (else it drains in
        its own thread, which is quicker), the loop runs, and flush() is not on its thread."""
        return (
            self._batcher.blocking_cycles
            and not self._retired
            and self.loop.is_running()
            and asyncio._get_running_loop() is not self.loop
        )

    def alive(self) -> bool:
        return not self._retired


class _LoopWatch:
    """The process's loop watch: a daemon thread, running while loop drivers are, that asks
    each of them every `_WATCH_EVERY` seconds to look at its loop (`LoopDriver.check_loop`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drivers: weakref.WeakSet[LoopDriver] = weakref.WeakSet()
        self._running = False

    def add(self, driver: LoopDriver) -> None:
        with self._lock:
            self._drivers.add(driver)
            if not self._running:
                try:
                    # Not threading.Thread.start(): it waits until the new thread runs, which
                    # cost the first publish() on each loop up to 8.6 ms (trial 136). The watch
                    # needs no handle, name or join; like a daemon thread, it ends with the
                    # interpreter. The price: threading.enumerate() does not list it, and
                    # threading.settrace()/setprofile() hooks (coverage) do not follow it.
                    _thread.start_new_thread(self._run, ())
                except RuntimeError:  # the interpreter is shutting down: its exit drains
                    return
                self._running = True

    def discard(self, driver: LoopDriver) -> None:
        with self._lock:
            self._drivers.discard(driver)

    def _run(self) -> None:
        while True:
            time.sleep(_WATCH_EVERY)
            with self._lock:
                drivers = list(self._drivers)
                if not drivers:
                    self._running = False
                    return
            for driver in drivers:
                try:
                    driver.check_loop()
                except Exception:  # never let one driver's trouble end the watch of the others
                    continue

    def after_fork_in_child(self) -> None:
        # Only the forking thread survives: the watch starts again with the child's drivers.
        self._lock = threading.Lock()
        self._drivers = weakref.WeakSet()
        self._running = False


_WATCH: Final = _LoopWatch()
# The package's fork hooks: they also run when check_fork() finds a fork Python was not told of
# (uWSGI's), where the watch's lock may be held and its thread is gone.
at_fork(after_in_child=_WATCH.after_fork_in_child)
