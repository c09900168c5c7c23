"""Delivery to each subscription of `InMemoryEventBus`: numbered batches, parking and retries.

Used by the bus's worker thread only (and by `stop()` once the worker has ended or yielded).
A subscriber whose buffer is full has its overflow parked and retried with exponential backoff,
but the worker never sleeps for it, so the other subscribers are served meanwhile. What still
does not fit is counted as dropped for that subscriber alone.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventbus_core import Event, Subscription, backoff_delay

__all__ = ["FanOut", "Subscriber"]


@dataclass(eq=False)
class Subscriber:
    """Delivery state of one subscription.

    `start` is the sequence number of the first event published after `subscribe()`: events
    are numbered in publish order as the worker takes them, and the ones before `start` (still
    in the bus's buffer when the subscription was made) are not this subscriber's.
    """

    sub: Subscription
    start: int = 0
    pending: deque[Event] = field(default_factory=deque)
    attempts: int = 0
    next_retry: float = 0.0


class FanOut:
    """Moves batches into subscriptions.

    Args:
        bound: Most events parked per subscriber; beyond it they are dropped for it.
        retries: Retries for parked events (0: drop at once what does not fit).
        retry_base: First retry delay in seconds; it doubles on each retry.
    """

    def __init__(self, bound: int, retries: int, retry_base: float) -> None:
        self._bound = bound
        self._retries = retries
        self._retry_base = retry_base

    def deliver(
        self, first: int, batch: list[Event], subscribers: Sequence[Subscriber], now: float
    ) -> None:
        """Offer `batch`, whose first event has sequence number `first`, to every subscriber
        it belongs to; park what a full one cannot take."""
        end = first + len(batch)
        for state in subscribers:
            events = batch
            if state.start > first:  # subscribed while part of this batch was buffered
                if state.start >= end:
                    continue
                events = batch[state.start - first :]
            if state.pending:
                self._park(state, events, now)
                continue
            taken = state.sub.offer(events)
            if taken < len(events):
                self._park(state, events[taken:], now)

    def _park(self, state: Subscriber, events: list[Event], now: float) -> None:
        """Hold what a full subscriber could not take, to retry; drop beyond the bound."""
        if state.sub.finished:  # closed by its consumer: nobody is left to count for
            return
        if not state.pending:
            state.attempts = 0
            state.next_retry = now + self._retry_base
        room = max(self._bound - len(state.pending), 0)
        if room >= len(events):
            state.pending.extend(events)
        else:
            state.pending.extend(events[:room])
            state.sub.count_dropped(len(events) - room)
        if self._retries == 0:
            state.sub.count_dropped(len(state.pending))
            state.pending.clear()

    def retry(self, subscribers: Sequence[Subscriber], now: float) -> bool:
        """Retry parked events that are due; True if any moved."""
        moved_any = False
        for state in subscribers:
            pending = state.pending
            if not pending or now < state.next_retry:
                continue
            if state.sub.finished:
                pending.clear()
                continue
            room = state.sub.space()
            moved = state.sub.offer(list(pending)[:room]) if room > 0 else 0
            for _ in range(moved):
                pending.popleft()
            if moved:
                moved_any = True
            if not pending:
                continue
            # Progress means the consumer is alive: give the rest fresh retries.
            state.attempts = 0 if moved else state.attempts + 1
            if state.attempts >= self._retries:
                state.sub.count_dropped(len(pending))
                pending.clear()
                continue
            # Core's backoff formula, uncapped (`retries` bounds it) and without jitter: an
            # in-process retry has no other process to fall into lock step with.
            delay = backoff_delay(state.attempts, self._retry_base, math.inf, jitter=False)
            state.next_retry = now + delay
        return moved_any

    @staticmethod
    def give_up(subscribers: Sequence[Subscriber]) -> None:
        """Count what is still parked as dropped for its subscriber (the bus stops)."""
        for state in subscribers:
            if state.pending:
                state.sub.count_dropped(len(state.pending))
                state.pending.clear()

    @staticmethod
    def parked(subscribers: Sequence[Subscriber]) -> int:
        """Events parked for a retry, over all subscribers (read from any thread: the length
        of a deque is read at once)."""
        return sum(len(state.pending) for state in subscribers)

    @staticmethod
    def next_retry_in(subscribers: Sequence[Subscriber], now: float) -> float | None:
        """Seconds until the next retry is due (None: nothing is parked)."""
        waits = [s.next_retry - now for s in subscribers if s.pending]
        return max(0.0, min(waits)) if waits else None
