"""eventbus-core: non-blocking observability events for LLM proxies.

The `Event` and its Go wire format, the `EventBus` contract, the plugin framework (pluggy,
entry-point group `eventbus`), settings and `create_bus()`.
"""

from eventbus_core._bus import BaseEventBus, EventBus
from eventbus_core._deadletter import DeadLetter, JsonlDeadLetter, MemoryDeadLetter
from eventbus_core._dispatch_stats import DispatcherStats, SinkStats
from eventbus_core._dispatcher import Dispatcher
from eventbus_core._errors import (
    BackendLoadError,
    EventBusError,
    PermanentSinkError,
    SettingsError,
    SinkError,
    TransientSinkError,
    UnknownBackendError,
    UnknownSinkError,
    WireFormatError,
)
from eventbus_core._event import Event, Headers
from eventbus_core._factory import create_bus
from eventbus_core._plugins import (
    PluginInfo,
    PluginLoadWarning,
    PluginRegistry,
    Registration,
    get_registry,
    reset_registry,
)
from eventbus_core._redact import Redactor, redact_headers, redact_text
from eventbus_core._redact_bus import RedactingBus
from eventbus_core._retry import RetryPolicy, classify_status, parse_retry_after
from eventbus_core._secrets import RedactedURL, redact_url
from eventbus_core._settings import ENV_VARS, EventBusSettings
from eventbus_core._sink import Sink, sink_options_from_env
from eventbus_core._source import AckableSource, Delivery, SubscriptionSource
from eventbus_core._stats import BusStats, SubscriberStats
from eventbus_core._subscription import Subscription, SubscriptionClosed
from eventbus_core._transform import LLMTransformer, Payload, Transform, decode_body
from eventbus_core.asgi import EventBusMiddleware
from eventbus_core.hookspecs import RegisterFn, hookimpl

__version__ = "0.1.0"

__all__ = [
    # configuration and plugins
    "ENV_VARS",
    "AckableSource",
    # errors
    "BackendLoadError",
    # the bus contract
    "BaseEventBus",
    "BusStats",
    # dispatcher and sinks
    "DeadLetter",
    "Delivery",
    "Dispatcher",
    "DispatcherStats",
    # events
    "Event",
    "EventBus",
    "EventBusError",
    # instrumentation
    "EventBusMiddleware",
    "EventBusSettings",
    "Headers",
    "JsonlDeadLetter",
    "LLMTransformer",
    "MemoryDeadLetter",
    "Payload",
    "PermanentSinkError",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginRegistry",
    "RedactedURL",
    "RedactingBus",
    "Redactor",
    "RegisterFn",
    "Registration",
    "RetryPolicy",
    "SettingsError",
    "Sink",
    "SinkError",
    "SinkStats",
    "SubscriberStats",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionSource",
    "Transform",
    "TransientSinkError",
    "UnknownBackendError",
    "UnknownSinkError",
    "WireFormatError",
    "__version__",
    "classify_status",
    "create_bus",
    "decode_body",
    "get_registry",
    "hookimpl",
    "parse_retry_after",
    "redact_headers",
    "redact_text",
    "redact_url",
    "reset_registry",
    "sink_options_from_env",
]
