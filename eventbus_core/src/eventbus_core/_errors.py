"""Domain exceptions. Each subclasses the builtin a caller would naturally catch."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

__all__ = [
    "BackendLoadError",
    "BackendUnavailableError",
    "EventBusError",
    "MissingDependencyError",
    "PermanentSinkError",
    "PluginError",
    "SettingsError",
    "SinkError",
    "TransientSinkError",
    "UnknownBackendError",
    "UnknownSinkError",
    "WireFormatError",
    "error_type_of",
    "mark_delivered",
    "refused_alone",
    "stored_before_cut",
    "stored_before_failing",
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


class PluginError(EventBusError, RuntimeError):
    """A plugin's factory failed, or built something that is not a bus or a sink. The message
    names the backend or sink, the plugin and its distribution: a fault of that plugin (or of
    what it needs), not of eventbus."""


class BackendUnavailableError(EventBusError, ConnectionError):
    """The backend did not answer (server down, unreachable, or too slow).

    Raised by capability methods that do I/O on the caller's behalf (`check()`, `describe()`,
    `read_range()`, ...), never by `publish()`. The message says where the backend was looked
    for, without credentials, and what to check.
    """


class MissingDependencyError(EventBusError, ImportError):
    """An optional dependency (an extra) a feature needs is not installed; the message gives
    the pip command that installs it."""


class PluginDependencyError(PluginError, MissingDependencyError):
    """A plugin's factory failed for a module that is not installed: an installation problem,
    which `eventbus` commands exit 2 with, as for a plugin that fails to import (a sink's exited
    1, trial 263); the message gives the pip command."""


class SinkError(EventBusError, RuntimeError):
    """A sink could not take a batch. Treated as transient (retried) unless permanent.

    Args:
        message: What went wrong (never include credentials).
        error_type: A short, low-cardinality label for metrics (`eventbus.sink.failed`'s
            `error_type`): the HTTP status (`"503"`), `"timeout"`, `"connection"`, ...;
            the exception's class name when not given.
        delivered: How many payloads at the start of the batch the sink did store before it
            failed (a sink that sends one request per event). The dispatcher counts those as
            sent and retries, or dead-letters, only the rest.
        refused: How many payloads right after the `delivered` ones this error is about alone
            (a sink that sends one request per event, whose destination refused that event's
            request: HTTP 400). When the dispatcher dead-letters (a permanent error, or the
            last retry) it dead-letters only those, and sends the events after them on as a
            new batch. 0 (the default): the error is about every payload not delivered.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        delivered: int = 0,
        refused: int = 0,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type or type(self).__name__
        self.delivered = self._count("delivered", delivered, "at the batch's start were stored")
        self.refused = self._count("refused", refused, "after the delivered ones were refused")

    def _count(self, name: str, value: object, meaning: str) -> int:
        count = _count_of(value)
        if count is None:
            # Raised from the sink's send(): the dispatcher then treats it as any other error
            # of the sink (retried), where a float here once stopped the sink's worker for good.
            raise TypeError(
                f"{type(self).__name__}({name}=...) must be an int (how many payloads {meaning}), "
                f"got {value!r}"
            )
        if count < 0:
            # As above: the sink's bug is then in the failure's message, where it was read as
            # 0 without a word.
            raise ValueError(
                f"{type(self).__name__}({name}={count}) must be >= 0 (how many payloads {meaning})"
            )
        return count


class TransientSinkError(SinkError):
    """A failure worth retrying (timeouts, HTTP 408, 429, 5xx).

    Args:
        message: What went wrong (never include credentials).
        retry_after: Seconds the destination asked us to wait (`Retry-After`), if it said.
        error_type: See `SinkError`.
        delivered: See `SinkError`.
        refused: See `SinkError`.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
        delivered: int = 0,
        refused: int = 0,
    ) -> None:
        super().__init__(message, error_type=error_type, delivered=delivered, refused=refused)
        # A NaN, infinite or negative wait is no wait the destination could have meant: the
        # retry policy's backoff applies instead (a NaN once made the dispatcher's stop hang).
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or not math.isfinite(retry_after)
            or retry_after < 0
        ):
            retry_after = None
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """A failure that retrying cannot fix (HTTP 4xx other than 408/429, bad payload).

    The dispatcher dead-letters the batch at once, without retries.
    """


MESSAGE_LIMIT = 2_000
"""Characters of a failure's message that a dead letter or a log line keeps: a sink quoting a
5 MB error body wrote it into each of its batch's dead letters and log lines (trial 201)."""


def message_of(exc: BaseException | str) -> str:
    """`str(exc)`, or a stand-in naming the error when its `__str__` itself raises: a plugin's
    broken `__str__` ended the sink's worker without a word (trial 201)."""
    try:
        return str(exc)
    except Exception as broken:
        return f"<{type(exc).__name__} whose str() raised {type(broken).__name__}>"


def clipped(text: str, mask: Callable[[str], str], limit: int = MESSAGE_LIMIT) -> str:
    """`mask(text)` cut to `limit` characters, saying how many more it had. Masked before it
    is cut: a secret cut in half is no longer recognised, and its first half would stay
    (review 202). Only a window 16 times the limit is masked (a 5 MB message took 0.13 s on
    the event loop at each attempt); a secret the window's end cuts is cut off by the limit."""
    window = text[: 16 * limit]
    masked = mask(window)
    more = len(masked) + len(text) - len(window) - limit
    if more <= 0:
        return masked
    return f"{masked[:limit]}... ({more:,} more characters)"


class RaisedBaseException(SinkError):
    """A sink's send raised a `BaseException` that is no `Exception` (or a `CancelledError`
    the dispatcher did not ask for): a failed attempt, labelled (`error_type`) with that
    exception's class name."""


def send_failure(exc: BaseException, method: str = "send()") -> Exception:
    """What a sink's `send()` (or `method`) raised, as the failed attempt the dispatcher counts
    and retries: an `Exception` is itself; any other `BaseException` (`SystemExit`,
    `KeyboardInterrupt`, `GeneratorExit`, a library's own such as gevent's `Timeout`) becomes a
    `RaisedBaseException` labelled with its class name. Let through, it ended the sink's task,
    or `eventbus dispatch`."""
    if isinstance(exc, Exception):
        return exc
    name = type(exc).__name__
    return RaisedBaseException(
        f"{method} raised {name} ({message_of(exc) or 'no message'}): a sink must raise an "
        f"Exception to fail a batch; a BaseException would end the dispatcher's task or process",
        error_type=name,
    )


def failure_name(exc: BaseException) -> str:
    """The class a failed attempt's log line names: the sink's own exception's, also where
    it was a `BaseException` the dispatcher wrapped (the line said `SinkError`, trial 255)."""
    return exc.error_type if isinstance(exc, RaisedBaseException) else type(exc).__name__


def error_type_of(exc: BaseException) -> str:
    """The `error_type` label of a failed send: a `SinkError`'s own, else the class name."""
    if isinstance(exc, SinkError):
        return exc.error_type
    return type(exc).__name__


def stored_before_failing(exc: BaseException, size: int) -> int:
    """How many payloads at the start of a batch of `size` the sink stored before failing with
    `exc`: a `SinkError`'s `delivered` when it names part or all of the batch, else 0 (a count
    of none, or of more than the batch, leaves the whole batch to retry)."""
    return _count_up_to(exc, "delivered", size)


def mark_delivered(cancelled: BaseException, count: int) -> None:
    """Say, on the `asyncio.CancelledError` a sink's `send()` re-raises, how many payloads at
    the start of its batch it stored before the dispatcher's stop cut it off (a sink sending
    one request per event): those are acknowledged as sent, and only the rest is handed back
    for redelivery (or dead-lettered, on a bus that keeps no log), not stored twice.

        except asyncio.CancelledError as cancelled:
            mark_delivered(cancelled, done)
            raise

    A count that is not an int >= 0 is said in a WARNING and ignored (the whole batch is handed
    back): raising here would replace the stop's cancellation with the sink's own error, and
    hold the stop for a retry (trial 241).
    """
    checked = _count_of(count)
    if checked is None or checked < 0:
        import logging

        logging.getLogger("eventbus").warning(
            "mark_delivered() was given %r, not a count of payloads stored (an int >= 0); "
            "ignored: the whole batch is handed back",
            count,
        )
        return
    setattr(cancelled, "delivered", checked)  # noqa: B010 - an attribute the class lacks


def stored_before_cut(cancelled: BaseException, size: int) -> int:
    """How many payloads at the start of a batch of `size` a cancelled `send()` said it stored
    (`mark_delivered`): from 1 to `size`, else 0 (none said, or a count that is not one)."""
    count = _count_of(getattr(cancelled, "delivered", None))
    return count if count is not None and 0 < count <= size else 0


def refused_alone(exc: BaseException, size: int) -> int:
    """How many payloads at the start of the `size` not yet stored the error `exc` is about
    alone: a `SinkError`'s `refused` when it names part of them, else 0 (the error is about all
    of them: a count of none, or of all or more, is read as that)."""
    return _count_up_to(exc, "refused", size - 1)


def _count_up_to(exc: BaseException, field: str, most: int) -> int:
    """A `SinkError`'s count `field` when it is from 1 to `most`, else 0: also when the error is
    no `SinkError`, or the count was set after construction to something that is not one."""
    count = _count_of(getattr(exc, field)) if isinstance(exc, SinkError) else 0
    return count if count is not None and 0 < count <= most else 0


def _count_of(value: object) -> int | None:
    """`value` as a count: an int, or an integer type of its own (numpy's); None otherwise
    (a float, a str, a bool)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
