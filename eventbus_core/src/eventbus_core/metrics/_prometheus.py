"""The Prometheus exporter: a custom collector that turns `METRICS` into metric families at
scrape time (needs `prometheus-client`, the `eventbus-core[prometheus]` extra)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from eventbus_core._extras import require
from eventbus_core.metrics._figures import FiguresReader
from eventbus_core.metrics._table import METRICS, Metric

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric as PromMetric
    from prometheus_client.registry import CollectorRegistry

__all__ = ["EventBusCollector", "register_prometheus"]


class EventBusCollector:
    """A Prometheus collector for a bus and/or a dispatcher (see `register_prometheus`).

    Each scrape calls `stats()` once per watched object and yields every metric of `METRICS`
    that applies; families are built fresh, so nothing is kept between scrapes.
    """

    def __init__(self, reader: FiguresReader) -> None:
        require("prometheus")
        self.reader = reader
        self._metrics = [
            m
            for m in METRICS
            if (m.scope == "bus" and reader.bus is not None)
            or (m.scope == "dispatcher" and reader.dispatcher is not None)
        ]

    def collect(self) -> Iterator[PromMetric]:
        """Yield one metric family per metric, read now."""
        figures = self.reader.read()
        for metric in self._metrics:
            yield _family(metric, list(metric.read(figures)))

    def describe(self) -> Iterator[PromMetric]:
        """Yield the families without reading anything (registration checks names with it)."""
        for metric in self._metrics:
            yield _family(metric, [])


def _family(metric: Metric, samples: list[Any]) -> PromMetric:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        SummaryMetricFamily,
    )

    name, labels, unit = metric.prometheus_name, list(metric.labels), metric.prometheus_unit
    doc = f"{metric.description} ({metric.name})"
    if metric.kind == "counter":
        counter = CounterMetricFamily(name, doc, labels=labels, unit=unit)
        for s in samples:
            counter.add_metric(list(s.labels), s.value)
        return counter
    if metric.kind == "gauge":
        gauge = GaugeMetricFamily(name, doc, labels=labels, unit=unit)
        for s in samples:
            gauge.add_metric(list(s.labels), s.value)
        return gauge
    summary = SummaryMetricFamily(name, doc, labels=labels, unit=unit)
    for s in samples:
        summary.add_metric(list(s.labels), count_value=s.count or 0, sum_value=s.value)
    return summary


def register_prometheus(
    bus: Any = None,
    *,
    dispatcher: Any = None,
    registry: CollectorRegistry | None = None,
    backlog: bool = True,
) -> EventBusCollector:
    """Register eventbus's metrics in a Prometheus registry with one call.

    Args:
        bus: The bus whose `stats()` to export (`eventbus.events.*`, `eventbus.buffer.*`,
            `eventbus.writer.*`), or None.
        dispatcher: A `Dispatcher` whose figures to export (`eventbus.sink.*`,
            `eventbus.batch.*`, `eventbus.consumer.*`), or None.
        registry: Where to register; `prometheus_client.REGISTRY` (what `make_asgi_app()`
            and `start_http_server()` serve by default) when omitted.
        backlog: Ask the dispatcher's sources for their consumer group's lag and pending at
            each scrape (one round trip per lane); False keeps scrapes free of I/O.

    Returns:
        The collector (`registry.unregister(collector)` removes it).

    Raises:
        ImportError: prometheus-client is not installed (the message has the pip command).
        ValueError: neither a bus nor a dispatcher was given, or the registry already holds
            these metric names (register one bus per registry).
    """
    require("prometheus")
    from prometheus_client import REGISTRY

    collector = EventBusCollector(FiguresReader(bus, dispatcher, backlog=backlog))
    (registry or REGISTRY).register(collector)
    return collector
