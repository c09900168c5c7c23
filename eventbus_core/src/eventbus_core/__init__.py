"""eventbus-core: non-blocking observability events for LLM proxies.

The `Event` and its Go wire format, the `EventBus` contract, the plugin framework (pluggy,
entry-point group `eventbus`), settings and `create_bus()`.

Names are loaded on first use (PEP 562), so `import eventbus_core` stays cheap: a proxy that
only builds `Event`s does not pay for the dispatcher, asyncio or pydantic-settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus_core._backoff import Backoff, backoff_delay
    from eventbus_core._bus import (
        BaseEventBus,
        EventBus,
        ManagedBus,
        StopInProgress,
        bind_publish,
        check_buffer_size,
        check_count,
        check_positive_seconds,
        check_seconds,
        check_stop_timeout,
        stop_wait,
    )
    from eventbus_core._errors import (
        BackendLoadError,
        BackendUnavailableError,
        EventBusError,
        MissingDependencyError,
        PermanentSinkError,
        PluginError,
        SettingsError,
        SinkError,
        TransientSinkError,
        UnknownBackendError,
        UnknownSinkError,
        WireFormatError,
        mark_delivered,
    )
    from eventbus_core._event import COUNTED_LOG_IDS_BELOW, Event, Headers
    from eventbus_core._factory import create_bus
    from eventbus_core._log import LineBudget, get_logger
    from eventbus_core._plugin_settings import PluginSettings, SettingInfo, describe_settings
    from eventbus_core._plugins import (
        PluginInfo,
        PluginLoadWarning,
        PluginRegistry,
        Registration,
        get_registry,
        reset_registry,
    )
    from eventbus_core._settings import ENV_VARS, EventBusSettings, all_env_vars
    from eventbus_core._sink import (
        Sink,
        check_options,
        option_bool,
        option_float,
        option_int,
        sink_options_from_env,
    )
    from eventbus_core._source import AckableSource, Delivery, SubscriptionSource
    from eventbus_core._stats import BusStats, SubscriberStats
    from eventbus_core._subscription import Subscription, SubscriptionClosed
    from eventbus_core._variable_source import ReadsVariablesOnly, variable_sources
    from eventbus_core.asgi import EventBusMiddleware
    from eventbus_core.dispatch._deadletter import DeadLetter, JsonlDeadLetter, MemoryDeadLetter
    from eventbus_core.dispatch._dispatcher import Dispatcher
    from eventbus_core.dispatch._payload import PayloadPreparer
    from eventbus_core.dispatch._retry import RetryPolicy, classify_status, parse_retry_after
    from eventbus_core.dispatch._stats import DispatcherStats, SinkStats
    from eventbus_core.hookspecs import RegisterFn, hookimpl
    from eventbus_core.redact._bus import RedactingBus
    from eventbus_core.redact._redact import (
        NO_REDACTION,
        SENSITIVE_HEADERS,
        Redactor,
        redact_headers,
        redact_text,
    )
    from eventbus_core.redact._secrets import MaskedMapping, RedactedURL, redact_url, server_list
    from eventbus_core.transform._llm import LLMTransformer, Payload, Transform, decode_body
    from eventbus_core.wsgi import EventBusWSGIMiddleware

__version__ = "0.1.0"

# Where each public name lives; read by __getattr__ below.
_WHERE: dict[str, str] = {
    "Backoff": "eventbus_core._backoff",
    "backoff_delay": "eventbus_core._backoff",
    "BaseEventBus": "eventbus_core._bus",
    "EventBus": "eventbus_core._bus",
    "ManagedBus": "eventbus_core._bus",
    "bind_publish": "eventbus_core._bus",
    "check_buffer_size": "eventbus_core._bus",
    "check_count": "eventbus_core._bus",
    "check_positive_seconds": "eventbus_core._bus",
    "check_seconds": "eventbus_core._bus",
    "check_stop_timeout": "eventbus_core._bus",
    "stop_wait": "eventbus_core._bus",
    "StopInProgress": "eventbus_core._bus",
    "BackendLoadError": "eventbus_core._errors",
    "BackendUnavailableError": "eventbus_core._errors",
    "EventBusError": "eventbus_core._errors",
    "MissingDependencyError": "eventbus_core._errors",
    "PermanentSinkError": "eventbus_core._errors",
    "PluginError": "eventbus_core._errors",
    "SettingsError": "eventbus_core._errors",
    "SinkError": "eventbus_core._errors",
    "TransientSinkError": "eventbus_core._errors",
    "UnknownBackendError": "eventbus_core._errors",
    "UnknownSinkError": "eventbus_core._errors",
    "WireFormatError": "eventbus_core._errors",
    "mark_delivered": "eventbus_core._errors",
    "COUNTED_LOG_IDS_BELOW": "eventbus_core._event",
    "Event": "eventbus_core._event",
    "Headers": "eventbus_core._event",
    "create_bus": "eventbus_core._factory",
    "get_logger": "eventbus_core._log",
    "LineBudget": "eventbus_core._log",
    "PluginInfo": "eventbus_core._plugins",
    "PluginLoadWarning": "eventbus_core._plugins",
    "PluginRegistry": "eventbus_core._plugins",
    "Registration": "eventbus_core._plugins",
    "get_registry": "eventbus_core._plugins",
    "reset_registry": "eventbus_core._plugins",
    "PluginSettings": "eventbus_core._plugin_settings",
    "SettingInfo": "eventbus_core._plugin_settings",
    "describe_settings": "eventbus_core._plugin_settings",
    "variable_sources": "eventbus_core._variable_source",
    "ReadsVariablesOnly": "eventbus_core._variable_source",
    "ENV_VARS": "eventbus_core._settings",
    "EventBusSettings": "eventbus_core._settings",
    "all_env_vars": "eventbus_core._settings",
    "Sink": "eventbus_core._sink",
    "sink_options_from_env": "eventbus_core._sink",
    "check_options": "eventbus_core._sink",
    "option_bool": "eventbus_core._sink",
    "option_float": "eventbus_core._sink",
    "option_int": "eventbus_core._sink",
    "AckableSource": "eventbus_core._source",
    "Delivery": "eventbus_core._source",
    "SubscriptionSource": "eventbus_core._source",
    "BusStats": "eventbus_core._stats",
    "SubscriberStats": "eventbus_core._stats",
    "Subscription": "eventbus_core._subscription",
    "SubscriptionClosed": "eventbus_core._subscription",
    "EventBusMiddleware": "eventbus_core.asgi",
    "EventBusWSGIMiddleware": "eventbus_core.wsgi",
    "DeadLetter": "eventbus_core.dispatch._deadletter",
    "JsonlDeadLetter": "eventbus_core.dispatch._deadletter",
    "MemoryDeadLetter": "eventbus_core.dispatch._deadletter",
    "Dispatcher": "eventbus_core.dispatch._dispatcher",
    "PayloadPreparer": "eventbus_core.dispatch._payload",
    "RetryPolicy": "eventbus_core.dispatch._retry",
    "classify_status": "eventbus_core.dispatch._retry",
    "parse_retry_after": "eventbus_core.dispatch._retry",
    "DispatcherStats": "eventbus_core.dispatch._stats",
    "SinkStats": "eventbus_core.dispatch._stats",
    "RegisterFn": "eventbus_core.hookspecs",
    "hookimpl": "eventbus_core.hookspecs",
    "RedactingBus": "eventbus_core.redact._bus",
    "NO_REDACTION": "eventbus_core.redact._redact",
    "SENSITIVE_HEADERS": "eventbus_core.redact._redact",
    "Redactor": "eventbus_core.redact._redact",
    "redact_headers": "eventbus_core.redact._redact",
    "redact_text": "eventbus_core.redact._redact",
    "MaskedMapping": "eventbus_core.redact._secrets",
    "RedactedURL": "eventbus_core.redact._secrets",
    "redact_url": "eventbus_core.redact._secrets",
    "server_list": "eventbus_core.redact._secrets",
    "LLMTransformer": "eventbus_core.transform._llm",
    "Payload": "eventbus_core.transform._llm",
    "Transform": "eventbus_core.transform._llm",
    "decode_body": "eventbus_core.transform._llm",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    # events
    "COUNTED_LOG_IDS_BELOW",
    "Event",
    "Headers",
    # the bus contract
    "BaseEventBus",
    "BusStats",
    "EventBus",
    "ManagedBus",
    "SubscriberStats",
    "Subscription",
    "SubscriptionClosed",
    "AckableSource",
    "Delivery",
    "SubscriptionSource",
    "bind_publish",
    "check_buffer_size",
    "check_count",
    "check_positive_seconds",
    "check_seconds",
    "check_stop_timeout",
    "stop_wait",
    "StopInProgress",
    # for backends: retry delays
    "Backoff",
    "backoff_delay",
    # configuration and plugins
    "ENV_VARS",
    "EventBusSettings",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginRegistry",
    "PluginSettings",
    "MaskedMapping",
    "RedactedURL",
    "RegisterFn",
    "Registration",
    "SettingInfo",
    "all_env_vars",
    "create_bus",
    "describe_settings",
    "variable_sources",
    "ReadsVariablesOnly",
    "get_logger",
    "LineBudget",
    "get_registry",
    "hookimpl",
    "redact_url",
    "reset_registry",
    "server_list",
    # instrumentation
    "EventBusMiddleware",
    "EventBusWSGIMiddleware",
    # dispatcher and sinks
    "DeadLetter",
    "Dispatcher",
    "DispatcherStats",
    "JsonlDeadLetter",
    "LLMTransformer",
    "MemoryDeadLetter",
    "NO_REDACTION",
    "Payload",
    "PayloadPreparer",
    "RedactingBus",
    "Redactor",
    "RetryPolicy",
    "SENSITIVE_HEADERS",
    "Sink",
    "SinkStats",
    "Transform",
    "classify_status",
    "decode_body",
    "parse_retry_after",
    "redact_headers",
    "redact_text",
    "sink_options_from_env",
    "check_options",
    "option_bool",
    "option_float",
    "option_int",
    "mark_delivered",
    # errors
    "BackendLoadError",
    "BackendUnavailableError",
    "MissingDependencyError",
    "EventBusError",
    "PermanentSinkError",
    "PluginError",
    "SettingsError",
    "SinkError",
    "TransientSinkError",
    "UnknownBackendError",
    "UnknownSinkError",
    "WireFormatError",
    "__version__",
]
