"""`SourceThread`: the one thread a lane's source is used from, as an `Executor` for
`loop.run_in_executor`.

Why not a `ThreadPoolExecutor(max_workers=1)`: its thread is not a daemon, and the interpreter
joins it at exit. A source's call can block for as long as its server stays frozen (a read or an
acknowledgement on a paused Redis waits for an answer that never comes), so a dispatcher asked to
stop, which has given such a call up, would keep its process alive until the server came back
(minutes, in an outside trial). This thread is a daemon: a call given up ends with the process,
and what it held stays pending in the source, to be delivered again (at-least-once).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["SourceThread"]

T = TypeVar("T")

_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class SourceThread(Executor):
    """Runs submitted calls one at a time, in order, in one daemon thread started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; its future settles when the thread has run it.

        Raises:
            RuntimeError: after `shutdown()`.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError(f"{self._name}: cannot run a call after shutdown")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._calls.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the caller's to handle, through the future
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; cancel the queued ones if `cancel_futures`; with `wait`, wait
        for the thread to finish what it runs (the dispatcher never waits: see the module)."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
            thread = self._thread
        if cancel_futures:
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    call[0].cancel()
        self._calls.put(None)
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
