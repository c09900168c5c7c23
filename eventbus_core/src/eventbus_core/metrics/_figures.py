"""One reading of the figures the metrics are made of: `bus.stats()`, `dispatcher.stats()` and,
where a dispatcher's sources can tell, their consumer groups' backlog.

Reading takes no lock `publish()` waits for: `stats()` only reads counters. The backlog is the
one part that does I/O (one round trip per lane, e.g. XINFO GROUPS on Redis streams), so it is
skipped for a lane whose source says it is not connected, and its errors only leave it out. The
lanes are asked at once, each from a thread of its own, and a reading waits `backlog_timeout`
seconds at most: a frozen server would otherwise hold the scrape for the client's socket timeout
once per lane (20 s for two lanes on Redis, past Prometheus's own 10 s scrape timeout, which
then drops every metric of that scrape). A lane that has not answered is left out, and not asked
again until its question returns.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from eventbus_core._log import get_logger
from eventbus_core._source import SubscriptionSource
from eventbus_core._stats import BusStats
from eventbus_core.capabilities import Backlog
from eventbus_core.dispatch._stats import DispatcherStats
from eventbus_core.redact._secrets import redact_url

__all__ = ["Figures", "FiguresReader"]

log = get_logger("eventbus.metrics")

BACKLOG_TIMEOUT: Final = 2.0
"""Seconds a metrics reading waits for the lanes' backlog at most (as `/readyz` for its check)."""


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
        backlog_timeout: Seconds a reading waits for the backlog at most (all lanes at once).
    """

    def __init__(
        self,
        bus: Any = None,
        dispatcher: Any = None,
        *,
        max_age: float = 0.0,
        backlog: bool = True,
        backlog_timeout: float = BACKLOG_TIMEOUT,
    ) -> None:
        if bus is None and dispatcher is None:
            raise ValueError("give a bus, a dispatcher, or both to read metrics from")
        self.bus = bus
        self.dispatcher = dispatcher
        self.max_age = max_age
        self.backlog = backlog
        self.backlog_timeout = backlog_timeout
        self._lock = threading.Lock()
        self._last: tuple[float, Figures] | None = None
        self._asking: dict[str, _Question] = {}  # lanes whose backlog question is still out

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
        questions: dict[str, _Question] = {}
        for lane, lane_source in self.dispatcher.sources.items():
            source = _backlog_of(lane_source)
            if source is None:
                continue
            if stats.lanes.get(lane, {}).get("group_joined") is False:
                continue  # the source is not connected: the round trip would only time out
            asking = self._asking.get(lane)
            if asking is not None and not asking.done.is_set():
                continue  # still waiting for the last answer: a frozen server, say
            questions[lane] = self._asking[lane] = _Question(lane, source)
        deadline = time.monotonic() + self.backlog_timeout
        out: dict[str, dict[str, int | None]] = {}
        for lane, question in questions.items():
            if question.done.wait(max(0.0, deadline - time.monotonic())) and question.answer:
                out[lane] = question.answer
            elif not question.done.is_set():
                log.debug("backlog of lane %s: no answer within %.1f s", lane, self.backlog_timeout)
        return out


def _backlog_of(source: object) -> Backlog | None:
    """What tells a lane's backlog: its source, or the subscription a lane without consumer
    groups reads (the Redis LIST log's counts what it holds past the subscription's place)."""
    if isinstance(source, Backlog):
        return source
    if isinstance(source, SubscriptionSource) and isinstance(source.subscription, Backlog):
        return source.subscription
    return None


class _Question:
    """One lane's `backlog()` call, asked from a daemon thread of its own (a stuck call then
    holds neither the scrape nor the interpreter's exit)."""

    def __init__(self, lane: str, source: Backlog) -> None:
        self.answer: dict[str, int | None] | None = None
        self.done = threading.Event()
        self._lane = lane
        self._source = source
        threading.Thread(target=self._ask, name=f"eventbus-backlog-{lane}", daemon=True).start()

    def _ask(self) -> None:
        try:
            self.answer = dict(self._source.backlog())
        except Exception as exc:  # figures are informative; a scrape must not fail
            log.debug("backlog of lane %s unavailable: %s", self._lane, redact_url(str(exc)))
        finally:
            self.done.set()
