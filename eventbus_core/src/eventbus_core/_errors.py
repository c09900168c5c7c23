"""Domain exceptions. Each subclasses the builtin a caller would naturally catch."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BackendLoadError",
    "BackendUnavailableError",
    "EventBusError",
    "PermanentSinkError",
    "SettingsError",
    "SinkError",
    "TransientSinkError",
    "UnknownBackendError",
    "UnknownSinkError",
    "WireFormatError",
]


class EventBusError(Exception):
    """Base class of every eventbus error."""


class WireFormatError(EventBusError, ValueError):
    """Bytes that are not a valid event in the Go llm-proxy wire format."""


class SettingsError(EventBusError, ValueError):
    """A setting has an invalid value; the message names the environment variable.

    Args:
        message: What is wrong and how to fix it.
        problems: When known, each invalid setting as `(field, shown, reason)`: the
            `EventBusSettings` field, the value as it may be shown (a URL's password masked;
            empty when it cannot be shown) and what is wrong with it. A caller that supplied
            the value itself, such as a command-line flag, uses them to name the flag instead.
    """

    def __init__(self, message: str, *, problems: Sequence[tuple[str, str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class UnknownBackendError(EventBusError, LookupError):
    """No installed plugin registers the requested backend name."""


class UnknownSinkError(EventBusError, LookupError):
    """No installed plugin registers the requested sink name."""


class BackendLoadError(EventBusError, ImportError):
    """The plugin that provides the selected backend failed to load."""


class BackendUnavailableError(EventBusError, ConnectionError):
    """The backend did not answer (server down, unreachable, or too slow).

    Raised by capability methods that do I/O on the caller's behalf (`check()`, `describe()`,
    `read_range()`, ...), never by `publish()`. The message says where the backend was looked
    for, without credentials, and what to check.
    """


class SinkError(EventBusError, RuntimeError):
    """A sink could not take a batch. Treated as transient (retried) unless permanent."""


class TransientSinkError(SinkError):
    """A failure worth retrying (timeouts, HTTP 408, 429, 5xx).

    Args:
        message: What went wrong (never include credentials).
        retry_after: Seconds the destination asked us to wait (`Retry-After`), if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """A failure that retrying cannot fix (HTTP 4xx other than 408/429, bad payload).

    The dispatcher dead-letters the batch at once, without retries.
    """
