"""`DropReport`: says in the log that `publish()` dropped events, from the background work.

A full publish buffer drops and counts (`stats().dropped`), and `publish()` must stay cheap, so
it logs nothing. An operator who reads logs and not metrics then saw nothing at all (trial 215:
489 events dropped under load, 34,469 during a backend's outage, and no line). The drainer asks,
once per cycle, whether the count moved (one comparison), and says so at most once a minute,
and at the end what is left to say (`SaidEvery`).
"""

from __future__ import annotations

from typing import Final

from eventbus_core._log import get_logger
from eventbus_core.batching._said_every import SaidEvery

__all__ = ["DropReport"]

log = get_logger("eventbus")

_EVERY: Final = 60.0
"""Seconds between two lines at most: a sustained overload is one line a minute."""


class DropReport:
    """Logs a WARNING when the count of events `publish()` refused for a full buffer grows.

    Args:
        label: Names the bus in the line ("eventbus memory worker").
        buffer_size: The buffer that was full, named in the line.
        every: Seconds between two lines at most.
    """

    __slots__ = ("_buffer_size", "_label", "_said")

    def __init__(self, label: str, buffer_size: int, every: float = _EVERY) -> None:
        self._label = label
        self._buffer_size = buffer_size
        self._said = SaidEvery(self._say, every)

    def after_fork_in_child(self, dropped: int) -> None:
        """A new lock (the parent's may have been held by its drainer at the fork: review 220,
        the child's stop() hung); `dropped`, the count the child inherits, is the parent's to
        say."""
        self._said.after_fork_in_child(dropped)

    def check(self, dropped: int, *, final: bool = False) -> None:
        """Call from the drainer (and `flush()`) with the count of events dropped so far for a
        full buffer; `final` at the end (a flush, a stop): what the last minute dropped is
        said then, whatever the minute."""
        self._said.reach(dropped)
        if final:
            self._said.say_now()

    def _say(self, new: int, dropped: int) -> None:
        log.warning(
            "%s dropped %d event(s) (%d in all, counted in stats().dropped): its publish "
            "buffer (buffer_size %d, OBSERVABILITY_BUFFER_SIZE) was full, as the backend is "
            "slower than the traffic or cannot write; this line comes at most once a minute "
            "while it drains, and at a flush() or the end for what is left",
            self._label,
            new,
            dropped,
            self._buffer_size,
        )
