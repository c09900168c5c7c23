"""`RedactingBus`: redaction at `publish()`, before any backend stores or forwards an event.

`create_bus()` wraps the backend in it when `EVENTBUS_REDACT_ON_PUBLISH` is on. It costs a
header scan and a body scan per publish, on the caller's thread, which is why it is off by
default (the dispatcher redacts before the sinks anyway); turn it on when the bus itself
leaves the process (Redis) and its readers must not see credentials either.
"""

from __future__ import annotations

import threading

from eventbus_core._bus import EventBus, ManagedBus
from eventbus_core._event import Event
from eventbus_core._log import get_logger
from eventbus_core._stats import BusStats
from eventbus_core.redact._redact import Redactor, stripped

__all__ = ["RedactingBus"]

log = get_logger("eventbus.redact")


class RedactingBus(ManagedBus):
    """Wrap `bus` so that every published event is redacted first.

    Everything else (subscribe, stop, stats, and backend extras such as `flush()` or
    `consumer()`) is the wrapped bus's own; `__wrapped__` is the wrapped bus, which
    `eventbus_core.capabilities.capability()` looks through.

    Should the redaction itself raise (a bug, or a user pattern that cannot cope), the event is
    still published, stripped to what cannot hold a credential: headers and bodies go, and the
    path keeps only its part before `?`, scrubbed. Such events are counted in `unredactable`
    (and `stats().extra["unredactable"]`); the first is logged at WARNING.

    Args:
        bus: The backend.
        redactor: The rules; the defaults when omitted.
    """

    def __init__(self, bus: EventBus, redactor: Redactor | None = None) -> None:
        super().__init__(bus)
        self.bus = bus
        self.redactor = redactor or Redactor()
        self.unredactable = 0
        self._lock = threading.Lock()  # for the failure path only

    def publish(self, event: Event) -> bool | None:
        """Redact `event`, then publish it; never raises (see the class for a failing
        redaction). What the wrapped bus's `publish()` says."""
        if event.__class__ is not Event and not isinstance(event, Event):
            # Not an event (None, a dict, the Event class): the backend refuses it, counted
            # as dropped and logged. Redacting it raised, and counted it as unredactable
            # (helper-111).
            return self.bus.publish(event)  # type: ignore[unreachable]  # untyped callers
        try:
            clean = self.redactor.event(event)
        except Exception as exc:
            # publish() must not raise; an event we cannot clean must not leave unclean.
            clean = self._stripped(event, exc)
        return self.bus.publish(clean)

    def _stripped(self, event: Event, exc: Exception) -> Event:
        """`event` without headers and bodies, its path cut before the query and scrubbed."""
        with self._lock:
            self.unredactable += 1
            first = self.unredactable == 1
        if first:
            log.warning(
                "redaction at publish failed (%s: %s); publishing such events without headers, "
                "bodies or query string (counted in stats().extra['unredactable'], logged once)",
                type(exc).__name__,
                exc,
            )
        return stripped(event)

    def stats(self) -> BusStats:
        """The wrapped bus's figures, with `extra["unredactable"]` (see the class)."""
        inner = self.bus.stats()
        return BusStats(
            inner.published,
            inner.dropped,
            lost=inner.lost,
            queue_depth=inner.queue_depth,
            subscribers=inner.subscribers,
            extra={**inner.extra, "unredactable": self.unredactable},
        )

    def __repr__(self) -> str:
        return f"<RedactingBus {self.bus!r}>"
