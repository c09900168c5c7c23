"""`RedactingBus`: redaction at `publish()`, before any backend stores or forwards an event.

`create_bus()` wraps the backend in it when `EVENTBUS_REDACT_ON_PUBLISH` is on. It costs a
header scan and a body scan per publish, on the caller's thread, which is why it is off by
default (the dispatcher redacts before the sinks anyway); turn it on when the bus itself
leaves the process (Redis) and its readers must not see credentials either.
"""

from __future__ import annotations

from typing import Any

from eventbus_core._bus import BaseEventBus, EventBus, subscribe_sized
from eventbus_core._event import Event
from eventbus_core._redact import Redactor
from eventbus_core._stats import BusStats
from eventbus_core._subscription import Subscription

__all__ = ["RedactingBus"]


class RedactingBus(BaseEventBus):
    """Wrap `bus` so that every published event is redacted first.

    Everything else (subscribe, stop, stats, and backend extras such as `flush()` or
    `consumer()`) is the wrapped bus's own.

    Args:
        bus: The backend.
        redactor: The rules; the defaults when omitted.
    """

    def __init__(self, bus: EventBus, redactor: Redactor | None = None) -> None:
        self.bus = bus
        self.redactor = redactor or Redactor()

    def publish(self, event: Event) -> None:
        """Redact `event`, then publish it; never raises (a failing redaction drops it)."""
        try:
            clean = self.redactor.event(event)
        except Exception:
            # publish() must not raise; an event we cannot clean must not leave unclean.
            clean = event.replace(response_headers=None, request_body=None, response_body=None)
        self.bus.publish(clean)

    def subscribe(self, name: str | None = None, *, buffer_size: int | None = None) -> Subscription:
        """Subscribe to the wrapped bus (with `buffer_size` where the wrapped bus offers it)."""
        return subscribe_sized(self.bus, name, buffer_size)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the wrapped bus."""
        self.bus.stop(timeout)

    def stats(self) -> BusStats:
        """The wrapped bus's figures."""
        return self.bus.stats()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    def __repr__(self) -> str:
        return f"<RedactingBus {self.bus!r}>"
