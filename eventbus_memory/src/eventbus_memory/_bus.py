"""`InMemoryEventBus`: bounded, non-blocking publish and per-subscriber fan-out in one process.

Settings read by the `memory` backend factory: `OBSERVABILITY_BUFFER_SIZE` (buffer_size),
`EVENTBUS_STOP_TIMEOUT` (stop_timeout) and `EVENTBUS_PUBLISH_PATH` (publish_path).

How it stays cheap: `publish()` is the shared batching core's (`eventbus_core.batching`): an
append to a deque, waking the drainer only when it sleeps after a quiet spell, or when the
buffer passes half full. The drainer is the publishing event loop (a loop timer) when the first
publish comes from a running loop, else a thread. Each cycle moves whole batches into each
subscriber's own bounded buffer (`_fanout.py`: a full subscriber's overflow is parked and
retried with exponential backoff, 3 retries as the Go original, without the drainer ever
sleeping for it; what still does not fit is dropped for that subscriber alone).

Events are numbered in publish order as the drainer takes them; a subscription remembers the
number reached when it was made, so an event still in the bus's buffer at `subscribe()` is
skipped for it (in the drainer: `publish()` does no extra work for this).
"""

from __future__ import annotations

import threading
import time

from eventbus_core import (
    BaseEventBus,
    BusStats,
    Event,
    Subscription,
    bind_publish,
    check_buffer_size,
    check_positive_seconds,
    check_seconds,
    get_logger,
    stop_wait,
)
from eventbus_core.batching import Batcher, PublishPath
from eventbus_memory._fanout import FanOut, Subscriber

__all__ = ["InMemoryEventBus"]

log = get_logger("eventbus.memory")


class InMemoryEventBus(BaseEventBus):
    """Single-process event bus.

    Args:
        buffer_size: Events `publish()` buffers before dropping; also each subscriber's buffer.
        stop_timeout: Seconds `stop()` waits at most to deliver what was accepted.
        retries: Retries for events a full subscriber could not take (Go original: 3).
        retry_base: First retry delay in seconds; it doubles on each retry.
        linger: Seconds the drainer waits between batches while traffic flows; bounds delivery
            latency without a wake-up per event. On the thread path every wake-up takes the
            GIL from the publishing threads: next to a busy ASGI server, 2 ms cost it 19-21%
            of its throughput in the middleware benchmark, 20 ms 5-12%. On the loop path it is
            one timer callback per `linger`. A quiet drainer is woken by the first publish;
            flush() and stop() drain at once.
        name: Name of the drainer thread, for debugging.
        publish_path: Who drains: `auto` (the event loop publish() first runs on, else a
            thread), `thread`, or `asyncio` (as auto, and says so when it must use a thread).

    Raises:
        ValueError: a size or time is out of range (`linger` and `retry_base` more than 0), or
            `retries` is not a whole number >= 0.
    """

    def __init__(
        self,
        buffer_size: int = 1000,
        *,
        stop_timeout: float = 5.0,
        retries: int = 3,
        retry_base: float = 0.001,
        linger: float = 0.02,
        name: str | None = None,
        publish_path: PublishPath = "auto",
    ) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(
                f"buffer_size must be a positive int, got {buffer_size!r} "
                "(OBSERVABILITY_BUFFER_SIZE when built from settings)"
            )
        check_seconds("stop_timeout", stop_timeout)
        # More than 0: 0 made the drainer busy-loop a core (1,000 publishes took 5.7 s of CPU
        # instead of 0.58 s, trial 261); `linger` is the Batcher's to check, below.
        check_positive_seconds("retry_base", retry_base)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            # `retries="3"` failed with a bare TypeError that named nothing (trial 261).
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        self.buffer_size = buffer_size
        self.stop_timeout = stop_timeout
        self._fanout = FanOut(buffer_size, retries, retry_base)
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()
        self._subs_lock = threading.Lock()
        self._left_to_parent = 0  # see `_after_fork_in_child`
        self._batcher = Batcher(
            self,
            buffer_size=buffer_size,
            linger=linger,
            path=publish_path,
            label="eventbus memory worker",
            thread_name=name or "eventbus-memory-worker",
            on_fork_in_child=self._after_fork_in_child,
            exit_timeout=stop_timeout,
            held=self._parked,
        )
        bind_publish(self, InMemoryEventBus.publish, self._batcher.publish)
        self._batcher.start()  # the thread path starts its thread now; the others wait

    def _after_fork_in_child(self, parent_held: int) -> None:
        """Give a forked child (gunicorn --preload, multiprocessing) a working bus of its own.

        Only the forking thread survives a fork: any lock a parent thread held stays locked
        forever. The batcher rebuilt its own (the parent's buffered events are the parent's to
        deliver); the bus rebuilds the rest, and the next publish() starts a drainer.

        Those `parent_held` events stay in the child's `published` (its figures start from the
        parent's) and are counted in `extra["left_to_parent"]`, so that the child's figures
        still add up.
        """
        self._left_to_parent += parent_held
        self._stop_lock = threading.Lock()
        self._subs_lock = threading.Lock()
        for state in self._subscribers:
            state.sub._after_fork_in_child()

    # ------------------------------------------------------------------------------ hot path

    def publish(self, event: Event) -> bool:
        """Buffer `event` for delivery and return at once (True); count a drop if the buffer is
        full (False).

        Never blocks and never raises because of subscribers. Thread-safe; usable from sync
        code, threads and coroutines alike. (Each instance replaces this method with its
        batcher's `publish`, which does exactly this: `eventbus_core.bind_publish`.)
        """
        return self._batcher.publish(event)

    # ------------------------------------------------------------------- the drain cycle

    def cycle(self) -> bool:
        """One drain cycle (`BatchClient`): fan the buffer out, then retry what is parked."""
        first, batch = self._batcher.take()
        if batch:
            # A subscriber added since the take starts after this batch: its number says so.
            self._fanout.deliver(first, batch, self._subscribers, time.monotonic())
            self._batcher.settle(len(batch), delivered=True)
        retried = self._fanout.retry(self._subscribers, time.monotonic())
        return bool(batch) or retried

    def next_due(self, now: float) -> float | None:
        """Seconds until a parked event's retry is due (`BatchClient`)."""
        return FanOut.next_retry_in(self._subscribers, now)

    def _parked(self) -> int:
        """Events a full subscriber's overflow holds for a retry (the batcher's `held`)."""
        return FanOut.parked(self._subscribers)

    # ------------------------------------------------------------------------ subscriptions

    def subscribe(self, name: str | None = None, *, buffer_size: int | None = None) -> Subscription:
        """Return a subscription to every event published from now on.

        Its buffer holds `buffer_size` events (default: the bus's); iterate it with `for` or
        `async for`, or take batches with `get_batch()`. It ends after `stop()`, once drained.

        Raises:
            ValueError: `buffer_size` is not a positive int.
        """
        sub = Subscription(
            check_buffer_size(buffer_size, self.buffer_size),
            name=name,
            on_close=self._unsubscribe,
        )
        with self._subs_lock:
            if self._stopped:
                sub.finish()
                return sub
            with self._batcher.lock:
                # Every event accepted so far is numbered below this: none is delivered to it.
                start = self._batcher.accepted
                self._subscribers = (*self._subscribers, Subscriber(sub, start))
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            self._subscribers = tuple(s for s in self._subscribers if s.sub is not sub)

    # ---------------------------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far is in every subscriber's buffer or counted.

        Returns True when that happened within `timeout` seconds (None: no limit), else False.
        An event a full subscriber cannot take counts as settled for it once its retries end
        (it is then in that subscriber's `dropped`); one given up by `stop()` is in `lost`.
        On the loop path the calling thread does the fan-out itself.
        """
        return self._batcher.flush(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting events, deliver what was accepted, then end every subscription.

        Idempotent. Waits at most `timeout` seconds (default: `stop_timeout`; `math.inf`: no
        limit; NaN raises `ValueError` and stops nothing) for the drainer,
        plus the cycle it may be in (CPU work only; it never waits on a consumer). Accepted
        events still in the buffer then are given up and counted in `stats().lost`; events a
        subscriber could not take are counted in its own `dropped`. Nothing is lost silently,
        and `published` and `dropped` never go down. On the loop path (or with no drainer
        yet) the calling thread delivers what is left.
        """
        wait = stop_wait(timeout, self.stop_timeout)  # a NaN raises before anything stops
        with self._stop_lock:
            if self._stopped:
                return
        batcher = self._batcher
        batcher.close(time.monotonic() + wait)
        with batcher.cycle_guard():
            with self._subs_lock:
                self._stopped = True
                subscribers = self._subscribers
            # What is still buffered (the time ran out, or a racing publish() came after the
            # drainer's last look) stays accepted and is counted as lost.
            batcher.finalize()
            FanOut.give_up(subscribers)
            for state in subscribers:
                state.sub.finish()

    def stats(self) -> BusStats:
        """`(published, dropped)` plus `lost`, queue depth and per-subscriber figures."""
        batcher = self._batcher
        with batcher.lock:
            published = batcher.accepted
            depth = batcher.buffered
            lost = batcher.lost + batcher.late()
            dropped = batcher.refused
        return BusStats(
            published,
            dropped,
            lost=lost,
            queue_depth=depth,
            subscribers=tuple(s.sub.stats() for s in self._subscribers),
            extra={
                "backend": "memory",
                "stopped": self._stopped,
                "left_to_parent": self._left_to_parent,
            },
        )

    @property
    def closed(self) -> bool:
        """True once `stop()` has been called."""
        return self._batcher.closed

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return (
            f"<InMemoryEventBus {state} buffer_size={self.buffer_size} "
            f"subscribers={len(self._subscribers)}>"
        )
