"""Acknowledged sources: how a consumer (the dispatcher) reads with at-least-once delivery.

A plain `Subscription` hands events over and forgets them. A backend with durable storage
(Redis streams) offers `AckableSource`s instead: each delivery carries a token, and the entry
stays pending until the consumer acknowledges it, so a consumer that dies before processing
gets it again (from itself on restart, or from a peer that reclaims it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from eventbus_core._event import Event
from eventbus_core._subscription import Subscription

__all__ = ["AckableSource", "Delivery", "SubscriptionSource"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event as read from a source, with what it takes to acknowledge it.

    Attributes:
        event: The decoded event.
        token: Backend-specific acknowledgement token (a stream entry id for Redis streams).
        attempts: How many times this entry has been delivered, this time included (1 if the
            backend does not track it).
    """

    event: Event
    token: Any = None
    attempts: int = 1


@runtime_checkable
class AckableSource(Protocol):
    """A source of deliveries that stay pending until acknowledged.

    Methods are blocking and meant for one consumer thread (or `asyncio.to_thread`).
    """

    name: str

    def read(self, max_items: int, timeout: float) -> list[Delivery]:
        """Return up to `max_items` deliveries, waiting up to `timeout` seconds for the first.

        Returns an empty list on timeout. Entries that cannot be decoded, or that were
        delivered too often, are dead-lettered by the source itself, not returned.
        """

    def ack(self, tokens: Sequence[Any]) -> None:
        """Acknowledge processed deliveries: they will not be delivered again."""

    def close(self) -> None:
        """Release resources. Unacknowledged deliveries stay pending for a later reader."""


class SubscriptionSource:
    """Adapts a plain `Subscription` (memory bus) to the `AckableSource` shape.

    Acknowledgement is a no-op: an in-memory event exists only in this process.
    """

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.name = subscription.name

    @property
    def exhausted(self) -> bool:
        """True once the bus stopped and every event was read."""
        return self.subscription.exhausted

    def read(self, max_items: int, timeout: float) -> list[Delivery]:
        """Return up to `max_items` events from the subscription as deliveries."""
        return [Delivery(e) for e in self.subscription.get_batch(max_items, timeout)]

    def ack(self, tokens: Sequence[Any]) -> None:
        """Nothing to acknowledge in memory."""

    def figures(self) -> dict[str, int]:
        """`dropped`: events the subscription's full buffer refused (the dispatcher read
        slower than they were published); `missed`: events the backend lost before it read
        them (`Subscription.missed`); `missed_unknown`: times it lost some it cannot count
        (`Subscription.missed_unknown`); `undecodable`: entries it skipped, not events
        (`Subscription.undecodable`)."""
        sub = self.subscription
        return {
            "dropped": sub.dropped,
            "missed": sub.missed,
            "missed_unknown": sub.missed_unknown,
            "undecodable": sub.undecodable,
        }

    def close(self) -> None:
        """Close the subscription."""
        self.subscription.close()
