"""Calls into the bus under test, each with a bound: a call that does not return fails the test.

A broken backend must fail the contract suite, not hang it: a `publish()` that waits for room,
a `stop()` that leaves its subscriptions open, a `flush(timeout)` that ignores its timeout. So
the suite never calls the bus from the test's own thread. `run_watched()` runs the calls in a
daemon thread, each through `Watch.call()`, which notes the call and its `Bound`; the test's
thread waits for that thread and fails the test as soon as a call has outlived its bound (or
the whole run its own), naming the call, the seconds and the knob that sets them. The stuck
thread is left behind (Python cannot kill a thread); being a daemon, it cannot keep the run
alive, and the next `Watch.call()` of an abandoned run raises instead of calling the bus again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Bound", "Watch", "run_watched"]

T = TypeVar("T")

# How often the waiting thread looks at the calls in progress: how late past its bound a stuck
# call is reported. Waiting for the worker itself ends at once when it finishes.
_POLL = 0.05


@dataclass(frozen=True)
class Bound:
    """How long something may take, which knob says so, and what the bus should have done."""

    what: str  # "publish()", "stop(timeout=0.5)": the subject of "did not return"
    seconds: float
    knob: str  # the class attribute(s) the bound is made of, e.g. "receive_timeout + stop_slack"
    why: str = ""
    verb: str = "did not return"  # "did not end" for an iteration, "did not finish" for a run
    # The rule a call breaks by raising ("publish() must never raise ..."); "" if it may raise.
    never_raises: str = ""

    def failure(self) -> str:
        """The message of a test this bound fails."""
        text = f"{self.what} {self.verb} within {self.seconds:g} s (the bound: {self.knob})"
        return f"{text}: {self.why}" if self.why else text


class _Abandoned(BaseException):
    """Ends a worker whose run already failed the test, at its next call into the bus.

    A BaseException, so that a test body's `except Exception` does not swallow it."""


class Watch:
    """The calls into the bus in progress, one per thread, for the waiting thread to check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[Bound, float]] = {}
        self._abandoned = False

    def call(self, bound: Bound, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, which must return within `bound` (from any thread of the run;
        each thread has one call in progress at a time)."""
        if self._abandoned:
            raise _Abandoned
        ident = threading.get_ident()
        with self._lock:
            self._calls[ident] = (bound, time.monotonic())
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not bound.never_raises or isinstance(exc, AssertionError):
                raise
            # The bus's own exception alone does not say which rule it broke.
            raise AssertionError(
                f"{bound.what} raised {type(exc).__name__}: {exc}: {bound.never_raises}"
            ) from exc
        finally:
            with self._lock:
                self._calls.pop(ident, None)

    def overrun(self, now: float) -> Bound | None:
        """The bound of a call in progress that has outlived it, if any."""
        with self._lock:
            calls = list(self._calls.values())
        for bound, began in calls:
            if now - began > bound.seconds:
                return bound
        return None

    def abandon(self) -> None:
        self._abandoned = True


def run_watched(
    body: Callable[[Watch], T], total: Bound | None = None, name: str = "contract-call"
) -> T:
    """`body(watch)` in a daemon thread; its result, or the exception it raised.

    Raises:
        AssertionError: a call made through `watch` outlived its bound, or the whole body
            outlived `total`, before the body returned.
    """
    watch = Watch()
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(body(watch))
        except _Abandoned:
            pass
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    began = time.monotonic()
    worker.start()
    while True:
        worker.join(_POLL)  # returns as soon as the body does
        if not worker.is_alive():
            break
        now = time.monotonic()
        late = watch.overrun(now)
        if late is None and total is not None and now - began > total.seconds:
            late = total
        if late is not None:
            watch.abandon()
            raise AssertionError(late.failure())
    if errors:
        raise errors[0]
    return results[0]
