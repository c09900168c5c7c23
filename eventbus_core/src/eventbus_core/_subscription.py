"""`Subscription`: a bounded buffer of events for one consumer, iterable with `for` and `async for`.

Backends own the producer side (`offer`, `space`, `finish`), called from one drainer (a
background thread, or an event loop) with whole batches; consumers use the iteration and `get*`
methods from any thread or loop. Hand-offs are per batch, and a consumer is only woken when it
is actually waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Final

from eventbus_core._errors import EventBusError
from eventbus_core._event import Event
from eventbus_core._log import get_logger
from eventbus_core._stats import SubscriberStats
from eventbus_core._timeout import check_stop_timeout

__all__ = ["Subscription", "SubscriptionClosed"]

_names: Final = itertools.count(1)
_WARN_EVERY: Final = 10.0  # seconds between two warnings about the same subscription's drops

log = get_logger("eventbus")


def _deadline(timeout: float | None, call: str) -> float | None:
    """The `time.monotonic()` deadline of a wait of `timeout` seconds (None or inf: none).

    Raises:
        TypeError: `timeout` is not a number of seconds (a str; a bool).
        ValueError: NaN, which busy-waited a core for ever (trial 261).
    """
    check_stop_timeout(timeout, call)
    if timeout is None or timeout >= threading.TIMEOUT_MAX:
        # No limit, as None: inf (or 1e10, 10**400) raised OverflowError in get() (trials 261
        # and 265, review 264): no wait can be longer than the platform's.
        return None
    return time.monotonic() + timeout


def _check_max_items(max_items: object, call: str) -> None:
    """Refuse a `max_items` that is neither None nor a whole number of at least 1: 0 made
    `batches()` spin a core for ever (trial 261).

    Raises:
        TypeError: not an int (a bool, a float, a str).
        ValueError: below 1.
    """
    if max_items is None:
        return
    if isinstance(max_items, bool) or not isinstance(max_items, int):
        raise TypeError(f"{call} max_items must be a whole number or None, got {max_items!r}")
    if max_items < 1:
        raise ValueError(f"{call} max_items must be at least 1 or None, got {max_items!r}")


class SubscriptionClosed(EventBusError):
    """The subscription has ended (the bus stopped or it was closed) and holds no more events."""


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Subscription:
    """The consumer's end of a bus: every event published after `subscribe()`, in order.

    Iterate with `for event in sub` (blocks) or `async for event in sub`; iteration ends once the
    bus has stopped (or `close()` was called) and the buffered events have been read.
    For throughput, take events in batches with `get_batch()`, `aget_batch()` or `batches()`.

    Args:
        capacity: Events the buffer holds; what does not fit is the backend's to retry or drop.
        name: A name for stats and logs.
        on_close: Called once when the consumer closes the subscription (to unsubscribe).
    """

    def __init__(
        self,
        capacity: int,
        *,
        name: str | None = None,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"subscription capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.name = name or f"sub-{next(_names)}"
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._sync_waiting = 0
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._finished = False
        self._on_close = on_close
        self.delivered = 0
        self.dropped = 0
        # Buffered and never read when `close()` discarded them: counted there, after the bus
        # hands it nothing more (the dispatcher counted before, and missed what came between).
        self.discarded = 0
        # True when its close could not learn how many events the backend still held past
        # what it was handed (a Redis list whose server did not answer): those are in no figure.
        self.uncounted_at_close = False
        # Entries the backend held for it that do not decode as events (something else writes
        # there): skipped, left in the backend (see `count_undecodable`).
        self.undecodable = 0
        self._warn_after: dict[str, float] = {}  # per kind of WARNING: when it may come again

    def _after_fork_in_child(self) -> None:
        """Replace locks a parent thread may have held at fork time; waiters did not survive."""
        self._cond = threading.Condition(threading.Lock())
        self._sync_waiting = 0
        self._async_waiters = []

    # ----------------------------------------------------------------- producer side (backends)

    def space(self) -> int:
        """Free room in the buffer, in events."""
        return self.capacity - len(self._queue)

    def offer(self, events: Sequence[Event]) -> int:
        """Append as many of `events` as fit and wake a waiting consumer; return how many fit.

        Call from the backend's delivery thread only. Never blocks on the consumer.
        """
        if self._finished:
            return 0
        room = self.capacity - len(self._queue)
        if room <= 0 or not events:
            return 0
        taken = events if len(events) <= room else events[:room]
        with self._cond:
            self._queue.extend(taken)
            if self._sync_waiting:
                self._cond.notify_all()
            waiters = self._async_waiters
            if waiters:
                self._async_waiters = []
        if waiters:
            self._wake_async(waiters)
        self.delivered += len(taken)
        return len(taken)

    def count_dropped(self, n: int) -> None:
        """Record `n` events this subscriber missed (backend delivery thread only).

        Logs a WARNING at the first miss and then at most every `_WARN_EVERY` seconds, so a
        consumer that falls behind is noticed while it happens, not only in the stats.
        """
        if n <= 0:
            return
        self.dropped += n
        if self._warning_due("dropped"):
            log.warning(
                "eventbus subscription %s dropped %d event(s) so far: its consumer is slower than "
                "the publishers and its buffer (%d events) is full; read faster or subscribe "
                "with a larger buffer_size",
                self.name,
                self.dropped,
                self.capacity,
            )

    def _warning_due(self, kind: str) -> bool:
        """True when a WARNING of `kind` may be logged now: the first, then at most one every
        `_WARN_EVERY` seconds."""
        now = time.monotonic()
        if now < self._warn_after.get(kind, 0.0):
            return False
        self._warn_after[kind] = now + _WARN_EVERY
        return True

    def count_undecodable(self, n: int, where: str) -> None:
        """Record `n` entries the backend held for this subscriber that do not decode as events
        (backend delivery thread only): skipped and left in the backend. `where` says where the
        first one is ("after LogID 3"), for whoever looks for them.

        Logs a WARNING at the first and then at most every `_WARN_EVERY` seconds: a
        dispatcher's lane skipped them with no figure and no line (trial 225).
        """
        if n <= 0:
            return
        self.undecodable += n
        if not self._warning_due("undecodable"):
            return
        log.warning(
            "eventbus subscription %s skipped %d entr%s %s that %s (not JSON, or not an "
            "event's fields: something other than eventbus or the Go llm-proxy writes there); "
            "%s in the backend, unread (%d so far, in its undecodable)",
            self.name,
            n,
            "y" if n == 1 else "ies",
            where,
            "does not decode as an event" if n == 1 else "do not decode as events",
            "it stays" if n == 1 else "they stay",
            self.undecodable,
        )

    def finish(self) -> None:
        """End the subscription from the backend side: consumers drain the buffer, then stop."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        self._wake_async(waiters)

    @staticmethod
    def _wake_async(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        running = asyncio._get_running_loop()
        for loop, fut in waiters:
            if loop is running:  # delivered on the waiter's own loop: no self-pipe write
                _wake_future(fut)
                continue
            # A closed loop raises RuntimeError: its consumer is gone, nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake_future, fut)

    # ------------------------------------------------------------------------- consumer side

    @property
    def finished(self) -> bool:
        """True once no further events will be added (they may still be buffered)."""
        return self._finished

    @property
    def exhausted(self) -> bool:
        """True once finished and every buffered event has been read."""
        return self._finished and not self._queue

    @property
    def missed(self) -> int:
        """Events the backend lost before this subscription read them (trimmed by its limits,
        or lost by its server), as far as it can tell; 0 for a bus that loses none (memory).
        Apart from `dropped`, which counts what this subscription's own full buffer refused."""
        return 0

    @property
    def missed_unknown(self) -> int:
        """Times the backend lost events before this subscription read them without being able
        to tell how many (its server lost its data); 0 for a bus that loses none (memory)."""
        return 0

    def qsize(self) -> int:
        """Events buffered now."""
        return len(self._queue)

    def stats(self) -> SubscriberStats:
        """This subscription's figures."""
        return SubscriberStats(self.name, self.delivered, self.dropped, len(self._queue))

    def close(self) -> None:
        """Stop receiving: unsubscribe from the bus and discard what is buffered (counted in
        `discarded`). Idempotent."""
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback(self)
        self.finish()
        with self._cond:
            self.discarded += len(self._queue)
            self._queue.clear()

    def _wait_sync(self, deadline: float | None) -> bool:
        """Block until events arrive or the end; False on timeout."""
        with self._cond:
            while not self._queue and not self._finished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._sync_waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._sync_waiting -= 1
        return True

    async def _wait_async(self, deadline: float | None) -> bool:
        """Await events or the end; False on timeout. The waiter is registered only for the
        wait itself: a wait that times out or is cancelled leaves nothing behind."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            with self._cond:
                if self._queue or self._finished:
                    return True
                if remaining is not None and remaining <= 0:
                    return False
                fut: asyncio.Future[None] = loop.create_future()
                waiter = (loop, fut)
                self._async_waiters.append(waiter)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                return bool(self._queue) or self._finished
            finally:
                self._forget(waiter)

    def _forget(self, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]) -> None:
        # A wake-up already took it out (offer and finish swap the list before waking);
        # a timeout or a cancellation did not.
        with self._cond, contextlib.suppress(ValueError):
            self._async_waiters.remove(waiter)

    def get(self, timeout: float | None = None) -> Event:
        """Return the next event, blocking up to `timeout` seconds (None: no limit).

        Raises:
            TimeoutError: nothing arrived in time.
            SubscriptionClosed: the subscription ended and is drained.
        """
        try:
            return self._queue.popleft()
        except IndexError:
            pass
        deadline = _deadline(timeout, "get()")
        while True:
            if not self._wait_sync(deadline):
                raise TimeoutError(f"no event within {timeout} s on subscription {self.name}")
            try:
                return self._queue.popleft()
            except IndexError:
                if self._finished:
                    raise SubscriptionClosed(f"subscription {self.name} has ended") from None

    async def aget(self, timeout: float | None = None) -> Event:
        """Async `get()`: awaits the next event without blocking the loop."""
        deadline = _deadline(timeout, "aget()")
        while True:
            try:
                return self._queue.popleft()
            except IndexError:
                if self._finished:
                    raise SubscriptionClosed(f"subscription {self.name} has ended") from None
            if not await self._wait_async(deadline):
                raise TimeoutError(f"no event within {timeout} s on subscription {self.name}")

    def _take(self, max_items: int | None) -> list[Event]:
        q = self._queue
        n = len(q) if max_items is None else min(len(q), max_items)
        popleft = q.popleft
        return [popleft() for _ in range(n)]

    def get_batch(self, max_items: int | None = None, timeout: float | None = None) -> list[Event]:
        """Return up to `max_items` buffered events, waiting up to `timeout` for the first.

        Returns an empty list on timeout, or once the subscription is exhausted (check
        `exhausted` to tell the two apart).

        Raises:
            TypeError, ValueError: `max_items` is not None or a whole number of at least 1;
                `timeout` is not None or a number of seconds (NaN).
        """
        _check_max_items(max_items, "get_batch()")
        if not self._queue:
            self._wait_sync(_deadline(timeout, "get_batch()"))
        return self._take(max_items)

    async def aget_batch(
        self, max_items: int | None = None, timeout: float | None = None
    ) -> list[Event]:
        """Async `get_batch()`."""
        _check_max_items(max_items, "aget_batch()")
        if not self._queue:
            await self._wait_async(_deadline(timeout, "aget_batch()"))
        return self._take(max_items)

    def batches(self, max_items: int | None = None) -> Iterator[list[Event]]:
        """Yield non-empty batches until the subscription is exhausted (blocking).

        Raises:
            TypeError, ValueError: `max_items` is not None or a whole number of at least 1.
        """
        _check_max_items(max_items, "batches()")  # at the call, not at the first next()
        return self._batches(max_items)

    def _batches(self, max_items: int | None) -> Iterator[list[Event]]:
        while True:
            batch = self.get_batch(max_items)
            if batch:
                yield batch
            elif self.exhausted:
                return

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            return self._queue.popleft()
        except IndexError:
            pass
        try:
            return self.get()
        except SubscriptionClosed:
            raise StopIteration from None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return self._queue.popleft()
        except IndexError:
            pass
        try:
            return await self.aget()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "finished" if self._finished else "open"
        return f"<Subscription {self.name} {state} queued={len(self._queue)}/{self.capacity}>"
