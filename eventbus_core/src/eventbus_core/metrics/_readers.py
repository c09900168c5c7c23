"""How each metric of the table is read from one `Figures` reading (see `_table`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from eventbus_core.metrics._figures import Figures

__all__ = [
    "WRITER_STATES",
    "Sample",
    "backlog",
    "batch_duration",
    "bus",
    "dropped",
    "lane",
    "sink",
    "sink_failed",
    "sink_figure",
    "source_dropped",
    "writer_failures",
    "writer_state",
]

WRITER_STATES: Final = ("idle", "connected", "reconnecting", "failing", "stopped")
"""States a backend's writer reports in `stats().extra["state"]` (Redis); each is one series."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a metric: its label values (in the metric's label order) and value.

    For a summary, `value` is the sum and `count` the number of observations.
    """

    labels: tuple[str, ...]
    value: float
    count: int | None = None


def bus(read: Callable[[Any], float]) -> Callable[[Figures], Iterator[Sample]]:
    """One unlabelled value read from the bus's `stats()`."""

    def samples(f: Figures) -> Iterator[Sample]:
        if f.bus is not None:
            yield Sample((), float(read(f.bus)))

    return samples


def dropped(f: Figures) -> Iterator[Sample]:
    """Drops by reason: refused by `publish()`, missed by full subscribers."""
    if f.bus is None:
        return
    yield Sample(("refused",), float(f.bus.dropped))
    yield Sample(("subscriber_full",), float(sum(s.dropped for s in f.bus.subscribers)))


def writer_state(f: Figures) -> Iterator[Sample]:
    """One series per writer state, 1 for the current one."""
    state = f.bus.extra.get("state") if f.bus is not None else None
    if not isinstance(state, str):
        return  # a backend without a writer (memory) has no state to report
    for name in (*WRITER_STATES, *(() if state in WRITER_STATES else (state,))):
        yield Sample((name,), 1.0 if name == state else 0.0)


def writer_failures(f: Figures) -> Iterator[Sample]:
    """The writer's failed writes, where the backend reports them."""
    value = f.bus.extra.get("write_failures") if f.bus is not None else None
    if isinstance(value, int):
        yield Sample((), float(value))


def sink(attr: str) -> Callable[[Figures], Iterator[Sample]]:
    """One value per sink: the `SinkStats` attribute `attr`."""

    def samples(f: Figures) -> Iterator[Sample]:
        if f.dispatcher is not None:
            for name, stats in f.dispatcher.sinks.items():
                yield Sample((name,), float(getattr(stats, attr)))

    return samples


def sink_figure(key: str) -> Callable[[Figures], Iterator[Sample]]:
    """One value per sink that reports the figure `key` of its own (`SinkStats.figures`)."""

    def samples(f: Figures) -> Iterator[Sample]:
        if f.dispatcher is not None:
            for name, stats in f.dispatcher.sinks.items():
                value = stats.figures.get(key)
                if value is not None:
                    yield Sample((name,), float(value))

    return samples


def sink_failed(f: Figures) -> Iterator[Sample]:
    """Failed attempts per sink and error type."""
    if f.dispatcher is not None:
        for name, stats in f.dispatcher.sinks.items():
            for error_type, n in dict(stats.failed_by_type).items():
                yield Sample((name, error_type), float(n))


def batch_duration(f: Figures) -> Iterator[Sample]:
    """Per sink: total batch seconds (sum) and finished batches (count)."""
    if f.dispatcher is not None:
        for name, stats in f.dispatcher.sinks.items():
            yield Sample((name,), stats.total_batch_seconds, stats.finished_batches)


def lane(key: str) -> Callable[[Figures], Iterator[Sample]]:
    """One value per lane: the integer figure `key`, where the lane reports it."""

    def samples(f: Figures) -> Iterator[Sample]:
        if f.dispatcher is not None:
            for lane, figures in f.dispatcher.lanes.items():
                value = figures.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    yield Sample((lane,), float(value))

    return samples


def backlog(key: str) -> Callable[[Figures], Iterator[Sample]]:
    """One value per lane: `lag` or `pending` from its source's backlog."""

    def samples(f: Figures) -> Iterator[Sample]:
        for lane, figures in f.backlog.items():
            value = figures.get(key)
            if value is not None:
                yield Sample((lane,), float(value))

    return samples


def source_dropped(f: Figures) -> Iterator[Sample]:
    """Per lane: what the bus dropped for its subscription (a full buffer), and what it
    held past the stop, never read."""
    if f.dispatcher is not None:
        for lane, figures in f.dispatcher.lanes.items():
            dropped = figures.get("dropped", 0) + figures.get("never_read", 0)
            yield Sample((lane,), float(dropped))
