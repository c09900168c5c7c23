"""eventbus-core: non-blocking observability events for LLM proxies.

The `Event` and its Go wire format, the `EventBus` contract, the plugin framework (pluggy,
entry-point group `eventbus`), settings and `create_bus()`.
"""

from eventbus_core._bus import BaseEventBus, EventBus, check_buffer_size
from eventbus_core._errors import (
    BackendLoadError,
    BackendUnavailableError,
    EventBusError,
    MissingDependencyError,
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
from eventbus_core._log import get_logger
from eventbus_core._plugins import (
    PluginInfo,
    PluginLoadWarning,
    PluginRegistry,
    Registration,
    get_registry,
    reset_registry,
)
from eventbus_core._settings import ENV_VARS, EventBusSettings
from eventbus_core._sink import Sink, sink_options_from_env
from eventbus_core._source import AckableSource, Delivery, SubscriptionSource
from eventbus_core._stats import BusStats, SubscriberStats
from eventbus_core._stream_entry import (
    STREAM_LOG_ID_BASE,
    entry_id_from_log_id,
    event_from_stream_entry,
    log_id_from_entry_id,
)
from eventbus_core._subscription import Subscription, SubscriptionClosed
from eventbus_core.asgi import EventBusMiddleware
from eventbus_core.dispatch._deadletter import DeadLetter, JsonlDeadLetter, MemoryDeadLetter
from eventbus_core.dispatch._dispatcher import Dispatcher
from eventbus_core.dispatch._payload import PayloadPreparer
from eventbus_core.dispatch._retry import RetryPolicy, classify_status, parse_retry_after
from eventbus_core.dispatch._stats import DispatcherStats, SinkStats
from eventbus_core.hookspecs import RegisterFn, hookimpl
from eventbus_core.redact._bus import RedactingBus
from eventbus_core.redact._redact import NO_REDACTION, Redactor, redact_headers, redact_text
from eventbus_core.redact._secrets import RedactedURL, redact_url
from eventbus_core.transform._llm import LLMTransformer, Payload, Transform, decode_body

__version__ = "0.1.0"

__all__ = [
    # events
    "Event",
    "Headers",
    "STREAM_LOG_ID_BASE",
    "entry_id_from_log_id",
    "event_from_stream_entry",
    "log_id_from_entry_id",
    # the bus contract
    "BaseEventBus",
    "BusStats",
    "EventBus",
    "SubscriberStats",
    "Subscription",
    "SubscriptionClosed",
    "AckableSource",
    "Delivery",
    "SubscriptionSource",
    "check_buffer_size",
    # configuration and plugins
    "ENV_VARS",
    "EventBusSettings",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginRegistry",
    "RedactedURL",
    "RegisterFn",
    "Registration",
    "create_bus",
    "get_logger",
    "get_registry",
    "hookimpl",
    "redact_url",
    "reset_registry",
    # instrumentation
    "EventBusMiddleware",
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
    "Sink",
    "SinkStats",
    "Transform",
    "classify_status",
    "decode_body",
    "parse_retry_after",
    "redact_headers",
    "redact_text",
    "sink_options_from_env",
    # errors
    "BackendLoadError",
    "BackendUnavailableError",
    "MissingDependencyError",
    "EventBusError",
    "PermanentSinkError",
    "SettingsError",
    "SinkError",
    "TransientSinkError",
    "UnknownBackendError",
    "UnknownSinkError",
    "WireFormatError",
    "__version__",
]
