"""The current time as an ISO 8601 string, as `datetime.now(UTC).isoformat()` writes it, in a
third of its time: the dispatcher stamps every payload with it.

The date and time of day change once a second, so they are formatted once a second and kept;
only the microseconds are written per call. The clock is read as `datetime.now()` reads it
(the system clock, rounded down to the microsecond), and, as `isoformat()` does, the fraction is
left out when the microseconds are 0.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso_from_ns", "utc_now_iso"]

# (whole seconds since the epoch, "YYYY-MM-DDTHH:MM:SS" of that second). Replaced whole, never
# changed in place: threads that read it at the same time see one second or the other.
_second: tuple[int, str] = (-1, "")


def iso_from_ns(ns: int) -> str:
    """`ns` (nanoseconds since the epoch) as `datetime.now(UTC).isoformat()` would write it."""
    global _second
    seconds, rest = divmod(ns, 1_000_000_000)
    cached = _second
    if cached[0] != seconds:
        # isoformat() of an aware UTC datetime ends with "+00:00": keep what comes before.
        cached = _second = (seconds, datetime.fromtimestamp(seconds, UTC).isoformat()[:-6])
    micros = rest // 1000
    if micros:
        return f"{cached[1]}.{micros:06d}+00:00"
    return f"{cached[1]}+00:00"


def utc_now_iso() -> str:
    """Now, as `datetime.now(UTC).isoformat()` would write it."""
    return iso_from_ns(time.time_ns())
