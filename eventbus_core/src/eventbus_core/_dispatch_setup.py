"""Building a `Dispatcher` from settings: sinks from plugins, policy, dead letters, redaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from eventbus_core._deadletter import JsonlDeadLetter
from eventbus_core._dispatcher import Dispatcher, GroupMode
from eventbus_core._factory import create_bus
from eventbus_core._plugins import PluginRegistry, get_registry
from eventbus_core._redact import Redactor
from eventbus_core._retry import RetryPolicy
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import Sink, sink_options_from_env
from eventbus_core._transform import LLMTransformer, Transform, load_transform

__all__ = [
    "build_sinks",
    "dispatcher_from_settings",
    "redactor_from_settings",
    "transform_from_settings",
]


def build_sinks(
    settings: EventBusSettings,
    sinks: Sequence[tuple[str, Mapping[str, str]]] | None = None,
    *,
    registry: PluginRegistry | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Sink]:
    """Build sinks through their plugins' factories.

    Args:
        settings: Passed to each factory.
        sinks: `(name, options)` pairs; `EVENTBUS_SINKS` when omitted. Options given here win
            over `EVENTBUS_SINK_<NAME>_<KEY>` variables.
        registry: Where to look the names up; the installed plugins by default.
        environ: Environment for sink options (default `os.environ`).

    Raises:
        UnknownSinkError: a name no installed plugin registers (the message lists them).
        SettingsError: a sink option is invalid.
    """
    reg = registry or get_registry()
    chosen = list(sinks) if sinks is not None else [(n, {}) for n in settings.sink_names]
    built: list[Sink] = []
    for name, options in chosen:
        registration = reg.sink(name)
        merged = {**sink_options_from_env(registration.name, environ), **options}
        built.append(registration.factory(settings, merged))
    return built


def transform_from_settings(settings: EventBusSettings) -> Transform:
    """`EVENTBUS_TRANSFORMER`, or the `LLMTransformer` with the `EVENTBUS_BODY_*` settings."""
    if settings.transformer:
        return load_transform(settings.transformer)
    binary: Literal["base64", "placeholder"] = (
        "placeholder" if settings.body_binary == "placeholder" else "base64"
    )
    return LLMTransformer(binary=binary, max_body_bytes=settings.body_max_bytes)


def redactor_from_settings(settings: EventBusSettings) -> Redactor | None:
    """The `EVENTBUS_REDACT*` rules, or None when redaction is off."""
    if not settings.redact:
        return None
    return Redactor(
        extra_headers=settings.redact_header_names, extra_patterns=settings.redact_pattern_list
    )


def dispatcher_from_settings(
    settings: EventBusSettings | None = None,
    *,
    bus: Any = None,
    sinks: Sequence[tuple[str, Mapping[str, str]]] | None = None,
    registry: PluginRegistry | None = None,
) -> Dispatcher:
    """Build a dispatcher configured entirely by settings (see `Dispatcher.from_settings`)."""
    settings = settings or EventBusSettings()
    built = build_sinks(settings, sinks, registry=registry)
    owned = bus is None
    if bus is None:
        bus = create_bus(settings, registry=registry)
    transform = transform_from_settings(settings)
    redactor = redactor_from_settings(settings)
    mode: GroupMode = "shared" if settings.consumer_groups == "shared" else "per-sink"
    dispatcher = Dispatcher(
        bus,
        built,
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        queue_size=max(settings.sink_queue_size, settings.batch_size),
        subscription_buffer=settings.dispatch_buffer,
        retry=RetryPolicy(
            retries=settings.retries,
            base=settings.retry_base,
            cap=settings.retry_cap,
            retry_after_max=settings.retry_after_max,
        ),
        dead_letter=(
            JsonlDeadLetter(settings.dead_letter_path) if settings.dead_letter_path else None
        ),
        transform=transform,
        redactor=redactor,
        group_mode=mode,
        group=settings.redis_group,
        consumer_name=settings.consumer_name,
        shutdown_timeout=settings.shutdown_timeout,
        stats_interval=settings.stats_interval,
    )
    if owned:
        dispatcher.owned_bus = bus
    return dispatcher
