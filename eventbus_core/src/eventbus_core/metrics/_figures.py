"""One reading of the figures the metrics are made of: `bus.stats()`, `dispatcher.stats()` and,
where a dispatcher's sources can tell, their consumer groups' backlog.

Reading takes no lock `publish()` waits for: `stats()` only reads counters. The backlog is the
one part that does I/O (one round trip per lane, e.g. XINFO GROUPS on Redis streams), so it is
skipped for a lane whose source says it is not connected, and its errors only leave it out.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from eventbus_core._log import get_logger
from eventbus_core._stats import BusStats
from eventbus_core.capabilities import Backlog
from eventbus_core.dispatch._stats import DispatcherStats
from eventbus_core.redact._secrets import redact_url

__all__ = ["Figures", "FiguresReader"]

log = get_logger("eventbus.metrics")


@dataclass(frozen=True, slots=True)
class Figures:
    """What the metric readers see at one scrape.

    Attributes:
        bus: The bus's `stats()`, or None when only a dispatcher is watched.
        dispatcher: The dispatcher's `stats()`, or None when only a bus is watched.
        backlog: Per lane, the source's `backlog()` (`lag`, `pending`) where it offers one.
    """

    bus: BusStats | None = None
    dispatcher: DispatcherStats | None = None
    backlog: dict[str, dict[str, int | None]] = field(default_factory=dict)


class FiguresReader:
    """Reads `Figures` from a bus and/or a dispatcher, at most once per `max_age` seconds.

    Both exporters read through one: an OpenTelemetry collection calls every instrument's
    callback in turn, and they then share one reading instead of taking one each.

    Args:
        bus: The bus to read (`stats()`), or None.
        dispatcher: The dispatcher to read (`stats()`, and its sources' backlog), or None.
        max_age: Seconds a reading is reused (0: read every time).
        backlog: Ask each source's backend for its backlog (`eventbus.consumer.lag` and
            `pending`); False leaves those metrics out and the scrape free of I/O.
    """

    def __init__(
        self,
        bus: Any = None,
        dispatcher: Any = None,
        *,
        max_age: float = 0.0,
        backlog: bool = True,
    ) -> None:
        if bus is None and dispatcher is None:
            raise ValueError("give a bus, a dispatcher, or both to read metrics from")
        self.bus = bus
        self.dispatcher = dispatcher
        self.max_age = max_age
        self.backlog = backlog
        self._lock = threading.Lock()
        self._last: tuple[float, Figures] | None = None

    def read(self) -> Figures:
        """The figures now (or from less than `max_age` seconds ago)."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.max_age:
                return self._last[1]
            figures = Figures(
                bus=self.bus.stats() if self.bus is not None else None,
                dispatcher=self.dispatcher.stats() if self.dispatcher is not None else None,
            )
            if self.backlog and figures.dispatcher is not None:
                figures.backlog.update(self._read_backlog(figures.dispatcher))
            self._last = (now, figures)
            return figures

    def _read_backlog(self, stats: DispatcherStats) -> dict[str, dict[str, int | None]]:
        out: dict[str, dict[str, int | None]] = {}
        for lane, source in self.dispatcher.sources.items():
            if not isinstance(source, Backlog):
                continue
            if stats.lanes.get(lane, {}).get("group_joined") is False:
                continue  # the source is not connected: the round trip would only time out
            try:
                out[lane] = dict(source.backlog())
            except Exception as exc:  # figures are informative; a scrape must not fail
                log.debug("backlog of lane %s unavailable: %s", lane, redact_url(str(exc)))
        return out
