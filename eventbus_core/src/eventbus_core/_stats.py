"""Figures reported by `EventBus.stats()`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BusStats", "SubscriberStats"]


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """Figures of one subscription.

    Attributes:
        name: The subscription's name (given to `subscribe()` or generated).
        delivered: Events placed in the subscriber's buffer.
        dropped: Events this subscriber missed because its buffer stayed full.
        queued: Events waiting in its buffer now.
    """

    name: str
    delivered: int
    dropped: int
    queued: int


class BusStats(tuple[int, int]):
    """`(published, dropped)`, unpackable like the seed's `Stats()`, with richer figures.

    `published` counts events accepted by `publish()`; `dropped` counts events refused there
    (buffer full, bus stopped). Both only ever grow, so `published + dropped` is exactly the
    number of `publish()` calls. An accepted event the backend later had to give up (its
    `stop()` deadline passed with the backend unreachable) is counted in `lost`, so that once a
    bus has stopped, every accepted event was delivered (or written) or is in `lost`.
    Subscribers' own misses are in `subscribers`, apart from these.

    Attributes:
        published: Events accepted by `publish()`.
        dropped: Events refused by `publish()`.
        lost: Accepted events given up afterwards (stop deadline passed), never delivered.
        queue_depth: Accepted events not yet handed on by the backend.
        subscribers: Per-subscription figures.
        extra: Backend-specific figures (for example Redis connection state).
    """

    lost: int
    queue_depth: int
    subscribers: tuple[SubscriberStats, ...]
    extra: dict[str, Any]

    def __new__(
        cls,
        published: int,
        dropped: int,
        *,
        lost: int = 0,
        queue_depth: int = 0,
        subscribers: tuple[SubscriberStats, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> BusStats:
        self = super().__new__(cls, (published, dropped))
        self.lost = lost
        self.queue_depth = queue_depth
        self.subscribers = subscribers
        self.extra = dict(extra or {})
        return self

    @property
    def published(self) -> int:
        """Events accepted by `publish()`."""
        return self[0]

    @property
    def dropped(self) -> int:
        """Events refused by `publish()` (buffer full or bus stopped)."""
        return self[1]

    def as_dict(self) -> dict[str, Any]:
        """All figures as plain data, for JSON output."""
        return {
            "published": self.published,
            "dropped": self.dropped,
            "lost": self.lost,
            "queue_depth": self.queue_depth,
            "subscribers": [
                {"name": s.name, "delivered": s.delivered, "dropped": s.dropped, "queued": s.queued}
                for s in self.subscribers
            ],
            **self.extra,
        }

    def __repr__(self) -> str:
        # Written as the constructor takes it: `extra=` holds the backend's figures, which are
        # not attributes (a repr of `backend='memory'` had users reach for `stats.backend`, trial
        # 166). A backend may repeat a figure in `extra` for readers of `extra` (Redis's "lost"):
        # shown once, unless the two disagree. The subscriptions as a count: each has a repr.
        shown = {"published": self.published, "dropped": self.dropped, "lost": self.lost}
        shown["queue_depth"] = self.queue_depth
        extra = {k: v for k, v in self.extra.items() if k not in shown or v != shown[k]}
        return (
            f"BusStats(published={self.published}, dropped={self.dropped}, lost={self.lost}, "
            f"queue_depth={self.queue_depth}, "
            f"subscribers=<{len(self.subscribers)} subscription(s)>, extra={extra!r})"
        )
