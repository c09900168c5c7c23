"""What `publish()` does with something that is not an `Event` (`event.to_json()` passed by
mistake, a dict, None): it refuses it, counted as dropped, and says so in the log. Accepted, it
made a Redis writer fail its whole batch (the valid events lost with it, while `flush()` said
True) and reached memory subscribers as it was."""

from __future__ import annotations

import threading
import time
from typing import Final

from eventbus_core._log import get_logger

__all__ = ["report_not_an_event"]

log = get_logger("eventbus.publish")

# One ERROR line a minute at most: a caller passing the wrong thing does it per request.
_EVERY: Final = 60.0
_lock = threading.Lock()
_last = -_EVERY
_since = 0


def report_not_an_event(given: object, bus: str) -> None:
    """Log (at most once a minute, with the count of such calls since the last line) that
    `bus`'s `publish()` refused `given`, which is not an `Event`."""
    global _last, _since
    now = time.monotonic()
    with _lock:
        _since += 1
        if now - _last < _EVERY:
            return
        _last, count, _since = now, _since, 0
    log.error(
        "%s: publish() takes an eventbus_core.Event, got %s; not published, counted as "
        "dropped (%d such call(s) since this was last logged). Build one with Event(...) or "
        "Event.from_json(data)",
        bus,
        type(given).__name__,
        count,
    )
