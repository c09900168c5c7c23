"""Calls into a plugin that must not hold the process hostage: a backend's `stop()` that never
returns (a bug of that plugin) must not keep `eventbus publish` or `eventbus dispatch` from
ending once its own bound has passed.

The call runs in a daemon thread and is waited for at most `bound` seconds; past that it is left
running (a daemon thread does not keep the interpreter alive), and the caller goes on with a
warning that names the call. What the plugin still held is then in nobody's figures: the warning
says so.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

from eventbus_core._log import get_logger

__all__ = ["STOP_MARGIN", "call_bounded", "call_bounded_async", "run_in_daemon"]

log = get_logger("eventbus")

STOP_MARGIN = 5.0
"""Seconds a backend's `stop()` may overrun its own timeout (EVENTBUS_STOP_TIMEOUT) before
`eventbus publish` or a dispatcher goes on without it."""


def run_in_daemon(fn: Callable[[], object], what: str) -> concurrent.futures.Future[object]:
    """Start `fn()` in a daemon thread named after `what`; its future holds what it returned or
    raised (a daemon: a call that never returns cannot keep the process alive)."""
    future: concurrent.futures.Future[object] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the caller, who decides
            future.set_exception(exc)

    threading.Thread(target=run, name=f"eventbus-bounded-{what}", daemon=True).start()
    return future


def _overran(what: str, bound: float) -> None:
    log.warning(
        "%s did not return within %.1f s: going on without it (a fault of the plugin; what it "
        "still held is in no figure)",
        what,
        bound,
    )


def call_bounded(fn: Callable[[], object], bound: float, what: str) -> bool:
    """Run `fn()` and wait for it at most `bound` seconds; True if it returned in time.

    Raises:
        Exception: whatever `fn` raised, if it ended in time.
    """
    future = run_in_daemon(fn, what)
    try:
        future.result(bound)
    except concurrent.futures.TimeoutError:
        _overran(what, bound)
        return False
    return True


async def call_bounded_async(fn: Callable[[], object], bound: float, what: str) -> bool:
    """`call_bounded` for a coroutine: the event loop goes on meanwhile.

    Not `asyncio.to_thread`: `asyncio.run()` waits for the default executor's threads at its end,
    which a call that never returns would keep from ending.
    """
    import asyncio  # here: the WSGI middleware uses this module and imports no event loop

    future = run_in_daemon(fn, what)
    try:
        await asyncio.wait_for(asyncio.wrap_future(future), bound)
    except TimeoutError:
        _overran(what, bound)
        return False
    return True
