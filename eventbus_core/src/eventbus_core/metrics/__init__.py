"""eventbus's own metrics and health, for Prometheus and OpenTelemetry.

The figures the bus and the dispatcher keep anyway (`bus.stats()`, `dispatcher.stats()`) are
read at scrape time and exported under the names of one table, `METRICS` (documented in
docs/operations.md). Nothing is added to `publish()`.

    from eventbus_core.metrics import register_prometheus, register_otel
    register_prometheus(bus)                        # prometheus-client's default registry
    register_prometheus(bus, registry=my_registry)  # or your own
    register_otel(bus, dispatcher)                  # if an OpenTelemetry SDK is configured

`eventbus dispatch --metrics-port 9464` serves `/metrics`, `/healthz` and `/readyz`
(`MetricsEndpoint`). The exporters need their extra (`eventbus-core[prometheus]`,
`eventbus-core[otel]`); importing this package needs neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus_core.metrics._figures import Figures, FiguresReader
    from eventbus_core.metrics._health import Check, Health, HealthProbe
    from eventbus_core.metrics._otel import OtelRegistration, register_otel
    from eventbus_core.metrics._prometheus import EventBusCollector, register_prometheus
    from eventbus_core.metrics._server import MetricsEndpoint
    from eventbus_core.metrics._table import METRICS, Metric, Sample

__all__ = [
    "METRICS",
    "Check",
    "EventBusCollector",
    "Figures",
    "FiguresReader",
    "Health",
    "HealthProbe",
    "Metric",
    "MetricsEndpoint",
    "OtelRegistration",
    "Sample",
    "register_otel",
    "register_prometheus",
]

_WHERE = {
    "METRICS": "_table",
    "Metric": "_table",
    "Sample": "_table",
    "Figures": "_figures",
    "FiguresReader": "_figures",
    "Check": "_health",
    "Health": "_health",
    "HealthProbe": "_health",
    "EventBusCollector": "_prometheus",
    "register_prometheus": "_prometheus",
    "OtelRegistration": "_otel",
    "register_otel": "_otel",
    "MetricsEndpoint": "_server",
}


def __getattr__(name: str) -> Any:
    # Lazy: the exporters' modules are imported when first used, so that importing this
    # package (or eventbus_core) never imports prometheus_client or opentelemetry.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus_core.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"eventbus_core.metrics.{module}"), name)
    globals()[name] = value
    return value
