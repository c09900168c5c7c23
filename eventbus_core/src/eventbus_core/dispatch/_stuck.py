"""`EndedButStuck`: telling when a dispatcher whose sources all ended can no longer drain them.

A memory bus that stops ends its subscriptions, and the dispatcher drains what they still buffer,
then ends by itself. But a lane whose sink takes nothing more (a `send()` that never returns,
its queue full) never reads to the end: back-pressure holds the reader, and the dispatcher
waited for it without a bound (`bus.stop(); dispatcher.join(timeout)` never returned, trial 116).
A drain that goes on, however slowly, is left to finish; one that has read nothing for
`EVENTBUS_SHUTDOWN_TIMEOUT` seconds ends as a stop does, which dead-letters what is left.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from eventbus_core.dispatch._lane import Lane

__all__ = ["EndedButStuck"]

CHECK_EVERY: Final = 0.5
"""Seconds between looks at the lanes while the dispatcher waits for its readers."""


class EndedButStuck:
    """Watches `lanes` whose readers are still running; see the module docstring.

    Args:
        lanes: The dispatcher's lanes.
        patience: Seconds without a read, every source having ended, before it gives up.
    """

    def __init__(self, lanes: Sequence[Lane], patience: float) -> None:
        self._lanes = lanes
        self._patience = patience
        self._read = -1
        self._since = 0.0

    def stuck(self, running: Sequence[Lane], now: float | None = None) -> bool:
        """True when every lane in `running` has a source that ended, and none of the lanes
        has read anything for `patience` seconds."""
        now = time.monotonic() if now is None else now
        if not running or not all(lane.source_ended() for lane in running):
            self._read = -1
            return False
        read = sum(lane.read for lane in self._lanes)
        if read != self._read:
            self._read, self._since = read, now
            return False
        return now - self._since >= self._patience
