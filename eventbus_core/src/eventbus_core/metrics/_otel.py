"""The OpenTelemetry exporter: observable instruments built from `METRICS` (needs
`opentelemetry-api`, the `eventbus-core[otel]` extra, and a configured `MeterProvider`)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventbus_core._extras import require
from eventbus_core._log import get_logger
from eventbus_core.metrics._figures import FiguresReader
from eventbus_core.metrics._table import METRICS, Metric, Sample

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["OtelRegistration", "is_configured", "register_otel"]

log = get_logger("eventbus.metrics")

_METER = "eventbus"


@dataclass
class OtelRegistration:
    """What `register_otel` created: the reader its callbacks share, and the instruments."""

    reader: FiguresReader
    instruments: list[Any] = field(default_factory=list)


def is_configured(provider: Any) -> bool:
    """True for a real `MeterProvider` (an SDK's), False for the API's no-op defaults.

    Without an SDK, `get_meter_provider()` returns a proxy that forwards to a provider set
    later, or the no-op one; instruments registered on either would read figures for nobody.
    """
    from opentelemetry.metrics import NoOpMeterProvider

    if provider is None or isinstance(provider, NoOpMeterProvider):
        return False
    return type(provider).__name__ != "_ProxyMeterProvider"


# The instrument names registered so far, per provider: OpenTelemetry keeps the first
# instrument of a name on a meter and ignores the next (a second bus's figures were lost
# without a word), where Prometheus refuses a duplicate.
_registered: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def _claim_names(provider: Any, names: set[str]) -> None:
    """Note `names` as registered on `provider`.

    Raises:
        ValueError: one of them is already registered there.
    """
    with _registered_lock:
        try:
            taken = _registered.setdefault(provider, set())
        except TypeError:  # a provider that cannot be weakly referenced: not checked
            return
        again = sorted(names & taken)
        if again:
            raise ValueError(
                f"eventbus metrics {', '.join(again)} are already registered on this "
                "MeterProvider, which would keep reporting the first registration's figures "
                "and ignore these: register each bus and each dispatcher once per provider "
                "(register_otel(bus) and register_otel(dispatcher=...) may be separate calls)"
            )
        taken |= names


def _attributes(metric: Metric, sample: Sample) -> dict[str, str]:
    return dict(zip(metric.labels, sample.labels, strict=True))


def _callback(
    reader: FiguresReader, metric: Metric, part: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for sample in metric.read(reader.read()):
            value: float = sample.value
            if part == "count":
                value = float(sample.count or 0)
            out.append(Observation(value, _attributes(metric, sample)))
        return out

    return observe


def register_otel(
    bus: Any = None,
    dispatcher: Any = None,
    meter_provider: MeterProvider | None = None,
    *,
    backlog: bool = True,
) -> OtelRegistration | None:
    """Register eventbus's metrics as OpenTelemetry observable instruments.

    Nothing is registered unless a real `MeterProvider` is configured (given, or set with
    `opentelemetry.metrics.set_meter_provider()` by an SDK): with the API's no-op default
    the call returns None and costs nothing afterwards.

    Counters become observable counters, gauges observable gauges; the one summary
    (`eventbus.batch.duration`) becomes two observable counters, `eventbus.batch.duration.sum`
    (seconds) and `eventbus.batch.duration.count` (batches), since the API has no observable
    histogram. Each collection reads the figures once (a reading is shared for 0.5 s).

    Args:
        bus: The bus whose `stats()` to export, or None.
        dispatcher: A `Dispatcher` whose figures to export, or None.
        meter_provider: The provider; `opentelemetry.metrics.get_meter_provider()` if omitted.
        backlog: Ask the dispatcher's sources for their lag and pending (I/O) at collection.

    Raises:
        ImportError: opentelemetry-api is not installed (the message has the pip command).
        ValueError: neither a bus nor a dispatcher was given; or the provider has these
            metrics already (a second bus, or the same one twice): OpenTelemetry would keep
            the first instruments and ignore the new ones.
    """
    require("otel")
    from opentelemetry import metrics

    from eventbus_core import __version__

    reader = FiguresReader(bus, dispatcher, max_age=0.5, backlog=backlog)
    provider = meter_provider or metrics.get_meter_provider()
    if not is_configured(provider):
        log.debug("no OpenTelemetry MeterProvider is configured: eventbus metrics not registered")
        return None
    chosen = [
        metric
        for metric in METRICS
        if not (metric.scope == "bus" and bus is None)
        and not (metric.scope == "dispatcher" and dispatcher is None)
    ]
    _claim_names(provider, {metric.name for metric in chosen})
    meter = provider.get_meter(_METER, __version__)
    registration = OtelRegistration(reader)
    for metric in chosen:
        if metric.kind == "counter":
            registration.instruments.append(
                meter.create_observable_counter(
                    metric.name,
                    callbacks=[_callback(reader, metric, "value")],
                    unit=metric.unit,
                    description=metric.description,
                )
            )
        elif metric.kind == "gauge":
            registration.instruments.append(
                meter.create_observable_gauge(
                    metric.name,
                    callbacks=[_callback(reader, metric, "value")],
                    unit=metric.unit,
                    description=metric.description,
                )
            )
        else:
            for part, unit in (("sum", metric.unit), ("count", "{batch}")):
                registration.instruments.append(
                    meter.create_observable_counter(
                        f"{metric.name}.{part}",
                        callbacks=[_callback(reader, metric, part)],
                        unit=unit,
                        description=f"{metric.description} ({part})",
                    )
                )
    return registration
