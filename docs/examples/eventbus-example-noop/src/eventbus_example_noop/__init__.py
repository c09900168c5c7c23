"""A third-party eventbus backend: `noop` counts and discards events."""

from __future__ import annotations

import threading

from eventbus_core import BaseEventBus, BusStats, Event, EventBusSettings, Subscription, hookimpl
from eventbus_core.hookspecs import RegisterFn

__all__ = ["NoopEventBus", "eventbus_register_backends"]


class NoopEventBus(BaseEventBus):
    """Accepts and counts every event; subscriptions receive nothing and end on stop()."""

    def __init__(self) -> None:
        self._published = 0
        self._dropped = 0
        self._stopped = False
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def publish(self, event: Event) -> None:
        """Count the event (or count a drop after stop())."""
        with self._lock:
            if self._stopped:
                self._dropped += 1
            else:
                self._published += 1

    def subscribe(self, name: str | None = None) -> Subscription:
        """A subscription that ends when the bus stops."""
        sub = Subscription(1, name=name)
        with self._lock:
            if self._stopped:
                sub.finish()
            else:
                self._subs.append(sub)
        return sub

    def stop(self, timeout: float | None = None) -> None:
        """End every subscription."""
        with self._lock:
            self._stopped = True
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.finish()

    def stats(self) -> BusStats:
        """`(published, dropped)`."""
        return BusStats(self._published, self._dropped, extra={"backend": "noop"})


def build(settings: EventBusSettings) -> NoopEventBus:
    """Factory called by `create_bus()` when LLM_PROXY_EVENT_BUS=noop."""
    return NoopEventBus()


@hookimpl
def eventbus_register_backends(register: RegisterFn) -> None:
    """Register backend `noop`."""
    register("noop", build)
