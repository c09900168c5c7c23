"""The bus contract every backend keeps, and a base class with its shared plumbing."""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Protocol, Self, runtime_checkable

from eventbus_core._event import Event
from eventbus_core._stats import BusStats
from eventbus_core._subscription import Subscription
from eventbus_core._timeout import check_stop_timeout

__all__ = [
    "BaseEventBus",
    "EventBus",
    "ManagedBus",
    "bind_publish",
    "check_buffer_size",
    "check_seconds",
    "check_stop_timeout",
    "stop_wait",
    "subscribe_sized",
]


@runtime_checkable
class EventBus(Protocol):
    """What every backend provides.

    - `publish(event)` never blocks on I/O and never raises because the backend is unhappy;
      it is thread-safe and may be called from sync code, threads or a running event loop.
      An event it cannot accept is counted as dropped. It may say which it was: True
      (accepted), False (dropped); None where the bus does not say (the built-in buses say).
    - `subscribe()` returns a `Subscription` of the events published after the call.
    - `stop(timeout=None)` is idempotent: it delivers what was accepted (waiting at most
      `timeout` seconds, default the bus's stop timeout) and then ends every subscription. A
      call made while another thread's stop() runs returns once that one is done (within its
      own timeout).
    - `stats()` unpacks as `published, dropped = bus.stats()`.
    """

    def publish(self, event: Event) -> bool | None:
        """Hand `event` to the bus without waiting; True if accepted, False if dropped, None
        if the bus does not say."""

    def subscribe(self, name: str | None = None) -> Subscription:
        """Return a subscription receiving every event published from now on."""

    def stop(self, timeout: float | None = None) -> None:
        """Deliver what was accepted (bounded by `timeout`), then end all subscriptions."""

    def stats(self) -> BusStats:
        """Return `(published, dropped)` with richer figures as attributes."""


def check_buffer_size(requested: int | None, default: int) -> int:
    """The buffer a subscription gets: `requested`, or the bus's `default` when None.

    Raises:
        ValueError: `requested` is not a positive int.
    """
    if requested is None:
        return default
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"subscription buffer_size must be a positive int, got {requested!r}")
    return requested


def check_count(
    label: str, value: int, minimum: int, meaning: str = "", *, maximum: int | None = None
) -> int:
    """A bus's count setting (`max_len`, `max_batch`, ...) as given to its constructor: an int
    of `minimum` or more (and `maximum` at most, if given); `meaning` (such as "0: no
    trimming") is added to the error.

    Raises:
        ValueError: `value` is not an int (a float, a str, a bool) or is out of range.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum:,}"
        also = f" ({meaning})" if meaning else ""
        raise ValueError(f"{label} must be an int {bound}{also}, got {value!r}")
    return value


SECONDS_MAX: Final = 1_000_000_000
"""The most seconds a time setting may give (about 31 years): waits past what a thread can wait
(`threading.TIMEOUT_MAX`) overflowed at stop() (1e10 s, trial 118), and a bound just under that
overflowed once stop() added its margin (trial 120)."""


def check_seconds(label: str, value: float) -> float:
    """A bus's time setting (`stop_timeout`, ...) as given to its constructor: a finite number
    of seconds, 0 or more.

    Raises:
        ValueError: `value` is not a number, is negative, or is not finite (`inf` would make
            the bounded `stop()` unbounded, and its waits overflow).
    """
    return _checked_seconds(label, value, more_than_zero=False)


def check_positive_seconds(label: str, value: float) -> float:
    """As `check_seconds`, for a wait that must be more than 0 (a poll, a flush, a timeout of
    I/O): one message for 0 and for a negative value (-1 was told ">= 0", then 0 "more than
    0", trial 190).

    Raises:
        ValueError: `value` is not a number, is not more than 0, or is not finite.
    """
    return _checked_seconds(label, value, more_than_zero=True)


def _checked_seconds(label: str, value: float, *, more_than_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{label} must be a number of seconds, got {value!r}")
    bound = "> 0" if more_than_zero else ">= 0"
    try:
        seconds = float(value)
    except OverflowError:  # an int past what a float holds: 10**400
        raise ValueError(
            f"{label} must be at most {SECONDS_MAX:,} seconds, got {value!r}"
        ) from None
    if not math.isfinite(seconds) or seconds < 0 or (more_than_zero and seconds == 0):
        raise ValueError(f"{label} must be a finite number of seconds {bound}, got {value!r}")
    if seconds > SECONDS_MAX:
        raise ValueError(f"{label} must be at most {SECONDS_MAX:,} seconds, got {value!r}")
    return seconds


def stop_wait(timeout: float | None, default: float) -> float:
    """The seconds `stop(timeout)` waits at most: `default` (the bus's `stop_timeout`) for
    None, 0 for a negative `timeout`, and no more than `threading.TIMEOUT_MAX` (what thread
    and lock waits accept) for a larger one, `inf` included: an explicit "no limit".

    Raises:
        TypeError, ValueError: as `check_stop_timeout`.
    """
    if timeout is None:
        return default
    check_stop_timeout(timeout)
    return min(max(0.0, float(timeout)), threading.TIMEOUT_MAX)


class StopInProgress:
    """The first `stop()` of a bus, as later calls see it: one made meanwhile from another
    thread (a lifespan's stop() racing a signal handler's) waits until it is done, so the
    figures it leaves are final; one made inside it, on its own thread (a signal handler), returns
    at once: it cannot wait for itself.

    The bus decides which call is first, under its own lock, and calls `start()` there; the first
    call ends with `finish()` (in a `finally`); every other call returns through `wait()`.
    """

    def __init__(self) -> None:
        self._done = threading.Event()
        self._thread: int | None = None

    def start(self) -> None:
        """This thread runs the first stop()."""
        self._thread = threading.get_ident()

    def finish(self) -> None:
        """The first stop() is done."""
        self._done.set()

    def wait(self, seconds: float) -> None:
        """For a later stop(): wait up to `seconds` for the first, unless this is its thread."""
        if self._thread != threading.get_ident():
            self._done.wait(min(seconds, threading.TIMEOUT_MAX))

    def after_fork_in_child(self, stopped: bool) -> StopInProgress:
        """What a forked child uses instead: a stop() running in another thread of the parent
        does not run in the child, so there is nothing to wait for once `stopped`."""
        fresh = StopInProgress()
        if stopped:
            fresh.finish()
        return fresh


def subscribe_sized(bus: Any, name: str | None, buffer_size: int | None) -> Subscription:
    """`bus.subscribe(name, buffer_size=...)` where the backend offers that keyword (the
    built-in ones do); a plain `bus.subscribe(name)` otherwise, or when `buffer_size` is None."""
    if buffer_size is not None:
        try:
            params = dict(inspect.signature(bus.subscribe).parameters)
        except (TypeError, ValueError):
            params = {}
        if "buffer_size" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        ):
            sub: Subscription = bus.subscribe(name, buffer_size=buffer_size)
            return sub
    plain: Subscription = bus.subscribe(name)
    return plain


def bind_publish(
    bus: object, declared: Callable[..., Any], fast: Callable[[Event], bool | None]
) -> None:
    """Make `fast` (the bus's batcher's or writer's own `publish`, doing exactly what the
    class's does) the instance's `publish`: one Python call per event instead of two, on the
    request path. Not where a subclass overrides `declared` (the class's own `publish`): its
    override stays in force. The instance's attribute then hides the class's method: patch
    `bus.publish`, not the class, on a bus already built."""
    if getattr(type(bus), "publish", None) is declared:
        setattr(bus, "publish", fast)  # noqa: B010 - an instance attribute over the method


class BaseEventBus(ABC):
    """Shared plumbing for backends: context managers and an async stop.

    Subclasses implement `publish`, `subscribe`, `stop` and `stats`.
    """

    @abstractmethod
    def publish(self, event: Event) -> bool | None:
        """Hand `event` to the bus without waiting; never raises for backend trouble. True if
        accepted, False if counted as dropped (None: the bus does not say)."""

    @abstractmethod
    def subscribe(self, name: str | None = None) -> Subscription:
        """Return a subscription receiving every event published from now on."""

    @abstractmethod
    def stop(self, timeout: float | None = None) -> None:
        """Deliver what was accepted (bounded by `timeout`), then end all subscriptions."""

    @abstractmethod
    def stats(self) -> BusStats:
        """Return `(published, dropped)` with richer figures as attributes."""

    async def astop(self, timeout: float | None = None) -> None:
        """`stop()` for async code: waits in a worker thread so the loop keeps running."""
        await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


class ManagedBus(BaseEventBus):
    """A bus wrapped in a `BaseEventBus`: what `create_bus()` returns for a plugin's bus that
    implements the four methods of `EventBus` without `BaseEventBus`, given what it promises
    every bus, the sync and async context managers and `astop()` (`with create_bus() as bus:`
    failed at run time for such a bus, and failed type checking for every bus, trial 129); and
    the base of `RedactingBus`, which changes `publish()`.

    Everything else (`flush()`, `consumer()`, the plugin's own attributes, its own context
    manager and `astop()`) is the wrapped bus's own, reached through this object;
    `__wrapped__` is the wrapped bus, which `eventbus_core.capabilities.capability()` looks
    through.
    """

    def __init__(self, bus: EventBus) -> None:
        self.__wrapped__ = bus

    def __getattr__(self, name: str) -> Any:
        # Only for what this class lacks: the plugin's own members (trial 130: flush() and a
        # plugin's methods raised AttributeError through the wrapper).
        if name == "__wrapped__":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def publish(self, event: Event) -> bool | None:
        """The wrapped bus's `publish()`."""
        return self.__wrapped__.publish(event)

    def subscribe(self, name: str | None = None, *, buffer_size: int | None = None) -> Subscription:
        """The wrapped bus's `subscribe()` (with `buffer_size` where it offers it)."""
        return subscribe_sized(self.__wrapped__, name, buffer_size)

    def stop(self, timeout: float | None = None) -> None:
        """The wrapped bus's `stop()`, once `timeout` is known to be a number or None."""
        check_stop_timeout(timeout)
        self.__wrapped__.stop(timeout)

    def stats(self) -> BusStats:
        """The wrapped bus's `stats()`."""
        return self.__wrapped__.stats()

    async def astop(self, timeout: float | None = None) -> None:
        """The wrapped bus's own `astop()` where it has one (trial 132), else `stop()` in a
        worker thread."""
        own = getattr(self.__wrapped__, "astop", None)
        if callable(own):
            check_stop_timeout(timeout)
            await own(timeout)
        else:
            await super().astop(timeout)

    def __enter__(self) -> Self:
        # The wrapped bus's own context manager, where it has one (trial 132).
        enter = getattr(self.__wrapped__, "__enter__", None)
        if callable(enter):
            enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        leave = getattr(self.__wrapped__, "__exit__", None)
        if callable(leave):
            leave(exc_type, exc, tb)
        else:
            self.stop()

    def __repr__(self) -> str:
        return repr(self.__wrapped__)
