"""Domain exceptions. Each subclasses the builtin a caller would naturally catch."""

from __future__ import annotations

__all__ = [
    "BackendLoadError",
    "EventBusError",
    "SettingsError",
    "UnknownBackendError",
    "UnknownSinkError",
    "WireFormatError",
]


class EventBusError(Exception):
    """Base class of every eventbus error."""


class WireFormatError(EventBusError, ValueError):
    """Bytes that are not a valid event in the Go llm-proxy wire format."""


class SettingsError(EventBusError, ValueError):
    """A setting has an invalid value; the message names the environment variable."""


class UnknownBackendError(EventBusError, LookupError):
    """No installed plugin registers the requested backend name."""


class UnknownSinkError(EventBusError, LookupError):
    """No installed plugin registers the requested sink name."""


class BackendLoadError(EventBusError, ImportError):
    """The plugin that provides the selected backend failed to load."""
