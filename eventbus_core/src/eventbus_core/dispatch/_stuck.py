"""`EndedButStuck`: telling when a dispatcher whose sources all ended can no longer drain them.

A memory bus that stops ends its subscriptions, and the dispatcher sends what they and its
sinks' queues still hold, then ends by itself, however long that takes while it goes on. But a
sink whose `send()` never returns drains nothing: back-pressure holds its lane's reader, and
the dispatcher waited for it without a bound (`bus.stop(); dispatcher.join(timeout)` never
returned, trial 116). So once every source has ended, the dispatcher watches for progress: an
event read, a batch sent, failed or dead-lettered, or a retry waiting out its delay (its next
attempt is due). When none comes for `patience` seconds, it stops as on SIGTERM, which
dead-letters what is left. The patience is the longest of `EVENTBUS_SHUTDOWN_TIMEOUT`, twice the
slowest batch so far (a sink that takes 4 s a batch is slow, not stuck, trial 118) and a minute
(`HUNG_AFTER`: the helicone sink, one POST per event, took 15 s over its first batch of 100 at
0.15 s a request, and was taken for hung, trial 120).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from eventbus_core.dispatch._lane import Lane
from eventbus_core.dispatch._worker import SinkWorker

__all__ = ["CHECK_EVERY", "EndedButStuck"]

CHECK_EVERY: Final = 0.5
"""Seconds between looks at the lanes and sinks while the dispatcher waits for them."""

HUNG_AFTER: Final = 60.0
"""Seconds without any progress before a drain is given up, at the least."""


class EndedButStuck:
    """Watches the progress of `lanes` and `workers`; see the module docstring.

    Args:
        lanes: The dispatcher's lanes.
        workers: Its sinks' workers.
        patience: Seconds without progress, every source having ended, before it gives up
            (at least twice the slowest batch so far, and `HUNG_AFTER`).
    """

    def __init__(
        self, lanes: Sequence[Lane], workers: Sequence[SinkWorker], patience: float
    ) -> None:
        self._lanes = lanes
        self._workers = workers
        self._patience = patience
        self._seen = -1
        self._since = 0.0

    def _progress(self) -> int:
        done = sum(lane.read for lane in self._lanes)
        for w in self._workers:
            s = w.stats
            done += s.batches + s.failures + s.dead_lettered + s.shed + s.dropped
        return done

    def waited(self, now: float | None = None) -> float | None:
        """Seconds without progress once that is `patience` or more, else None. Call it once
        every source has ended; while one still runs, call `reset()` instead."""
        now = time.monotonic() if now is None else now
        progress = self._progress()
        if progress != self._seen or any(w.retrying_after is not None for w in self._workers):
            self._seen, self._since = progress, now
            return None
        slowest = max((w.stats.max_batch_seconds for w in self._workers), default=0.0)
        patience = max(self._patience, 2 * slowest, HUNG_AFTER)
        return now - self._since if now - self._since >= patience else None

    def reset(self) -> None:
        """A source still runs: progress is not watched (yet)."""
        self._seen = -1
