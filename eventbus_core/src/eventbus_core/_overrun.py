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
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

from eventbus_core._log import get_logger

__all__ = [
    "CANCEL_GRACE",
    "STOP_MARGIN",
    "call_bounded",
    "call_bounded_async",
    "cancel_bounded",
    "run_bounded",
    "run_in_daemon",
]

T = TypeVar("T")

log = get_logger("eventbus")

STOP_MARGIN = 5.0
"""Seconds a backend's `stop()` may overrun its own timeout (EVENTBUS_STOP_TIMEOUT) before
`eventbus publish` or a dispatcher goes on without it."""

CANCEL_GRACE = 2.0
"""Seconds a cancelled task (a sink's send, say) gets to end before it is left behind."""

# Tasks left behind, kept referenced: once their loop is closed, the garbage collector would
# otherwise have asyncio log "Task was destroyed but it is pending!" for each, at some later,
# unrelated moment. They are few (one per plugin bug) and the process is ending.
_LEFT_BEHIND: list[object] = []


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


async def cancel_bounded(tasks: Collection[asyncio.Task[Any]], grace: float = CANCEL_GRACE) -> None:
    """Cancel `tasks` and wait at most `grace` seconds for them to end; one that swallows its
    cancellation (a plugin's fault) is left behind, with a warning naming it, instead of holding
    the stop for ever as `gather()` would."""
    import asyncio  # here: the WSGI middleware uses this module and imports no event loop

    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=grace)
    _LEFT_BEHIND.extend(stuck)
    for task in stuck:
        # Said here once: not again by asyncio when the interpreter ends and frees it ("Task
        # was destroyed but it is pending!", an ERROR line at a program's exit).
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        log.warning(
            "task %s did not end within %.1f s of being cancelled: going on without it (a "
            "plugin that swallows cancellation)",
            task.get_name(),
            grace,
        )


class _DaemonThreads(concurrent.futures.ThreadPoolExecutor):
    """The default executor of `run_bounded`: each call in a daemon thread of its own.

    A pool's threads are joined when the interpreter exits (`concurrent.futures` registers
    that), so a sink's `asyncio.to_thread` call that never returns kept a program whose
    `Dispatcher.start()` had stopped from ever exiting. A daemon thread does not. (A subclass,
    as asyncio takes no other default executor; it never starts the pool's own threads.)
    """

    def __init__(self) -> None:
        super().__init__(thread_name_prefix="eventbus-to-thread")

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the caller's to see, as a pool hands it over
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, name="eventbus-to-thread", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to end: the threads are the calls', and daemons."""


def run_bounded(main: Coroutine[Any, Any, T], grace: float = CANCEL_GRACE) -> T:
    """`asyncio.run(main)`, except that what a plugin leaves behind cannot keep it from
    returning: tasks still running when `main` ends are cancelled and waited for at most `grace`
    seconds (`asyncio.run` waits for ever on one that swallows its cancellation), and the
    default executor's threads are not waited for (`asyncio.run` waits for a sink's
    `asyncio.to_thread` call that never returns): they are daemon threads (`_DaemonThreads`),
    which do not keep the process from exiting either."""
    import asyncio

    loop = asyncio.new_event_loop()
    executor = _DaemonThreads()
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = [
                task
                for task in asyncio.all_tasks(loop)
                if not task.done() and task not in _LEFT_BEHIND  # each said once
            ]
            loop.run_until_complete(cancel_bounded(leftovers, grace))
            loop.run_until_complete(
                asyncio.wait([loop.create_task(loop.shutdown_asyncgens())], timeout=grace)
            )
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            asyncio.set_event_loop(None)
            loop.close()
