"""What both Redis buses share about their life: `stop()` within one deadline, and `fork()`.

`stop(timeout)` has one deadline for everything: the writer writes what was accepted until then
(and has a write still blocked on Redis cut shortly before it), then the subscriber thread
hands subscriptions what was written until the same deadline. No network I/O happens on the
caller's thread, so a paused, frozen or dead Redis cannot stretch it.

After `os.fork()` (gunicorn `--preload`, multiprocessing) only the forking thread exists in the
child, and locks held by other threads stay locked. Every live bus is rebuilt in the child:
its writer (a thread and connection of its own; the parent's unwritten events stay the
parent's), its subscriber thread (subscriptions made before the fork keep receiving in the
child, each process reading Redis for its own copy), and its consumers (see
`StreamConsumer.after_fork_in_child`). Buses a child builds after the fork need nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Any, Final

from eventbus_core import get_logger
from eventbus_redis._tail import Cursor, Tailer
from eventbus_redis._writer import BatchWriter

__all__ = ["RedisBusLifecycle"]

log = get_logger("eventbus.redis")

_SUBSCRIBE_FLUSH: Final = 1.0  # seconds subscribe() waits at most for the writer


class RedisBusLifecycle:
    """Mixin of both Redis buses: `_stop_within()` and the fork hooks.

    The bus provides `_writer`, `_tailer`, `_subs_lock`, `_stopped`, `stop_timeout` and
    `_behind()`, and calls `_track_forks()` once built.
    """

    _writer: BatchWriter
    _tailer: Tailer | None
    _subs_lock: threading.Lock
    _stopped: bool
    _client: Any
    stop_timeout: float
    _owns_client = False  # built by from_settings(): stop() closes its idle connections
    _url_source: str | None = None  # built by from_settings(): the setting(s) of the address

    def _behind(self, cursor: Cursor) -> int:
        """Events this bus wrote that `cursor`'s subscription has not been handed yet."""
        raise NotImplementedError

    def _consumers_to_fork(self) -> list[Any]:
        """Consumers to rebuild in a forked child (the streams bus has some)."""
        return []

    def _write_accepted(self) -> None:
        """Before `subscribe()` reads its start position: let the writer write what this bus
        accepted so far, so that a new subscription starts after it (as on the memory bus)
        rather than receiving events published before it. Bounded, and skipped while Redis is
        failing (the wait would only time out); publish() is never held up by it."""
        writer = self._writer
        if not writer.closed and writer.state in ("idle", "connected"):
            # The bus's own flush(): what the contract's "flush() settles before a new
            # subscription's start" checks, so a flush() that lies is still caught there.
            self.flush(_SUBSCRIBE_FLUSH)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every accepted event is written (each bus defines it)."""
        raise NotImplementedError

    def _stop_within(self, timeout: float | None) -> None:
        """Stop the writer, then the subscriber thread, both by one deadline. Idempotent."""
        with self._subs_lock:
            if self._stopped:
                return
            self._stopped = True
        wait = self.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, wait)
        self._writer.close(deadline)
        tailer = self._tailer
        if tailer is not None:
            tailer.stop(self._behind, deadline)
        if self._owns_client:
            # Idle connections only (closing a socket waits for nobody); a consumer still
            # reading keeps its own. Reading after stop() (read_events) reconnects.
            with contextlib.suppress(Exception):
                self._client.connection_pool.disconnect(inuse_connections=False)

    # ---------------------------------------------------------------------------------- fork

    def _track_forks(self) -> None:
        _LIVE.add(self)

    def _before_fork(self) -> None:
        self._writer.before_fork()
        if self._tailer is not None:
            self._tailer.before_fork()

    def _after_fork_in_parent(self) -> None:
        self._writer.after_fork_in_parent()
        if self._tailer is not None:
            self._tailer.after_fork_in_parent()

    def _after_fork_in_child(self) -> None:
        self._subs_lock = threading.Lock()
        self._writer.after_fork_in_child()
        if self._tailer is not None:
            self._tailer.after_fork_in_child()
        for consumer in self._consumers_to_fork():
            consumer.after_fork_in_child()


_LIVE: weakref.WeakSet[RedisBusLifecycle] = weakref.WeakSet()


def _each(hook: str) -> None:
    for bus in list(_LIVE):
        try:
            getattr(bus, hook)()
        except Exception:  # a fork hook must never take the process down
            log.exception("eventbus redis: %s failed for %r", hook, bus)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _each("_before_fork"),
        after_in_parent=lambda: _each("_after_fork_in_parent"),
        after_in_child=lambda: _each("_after_fork_in_child"),
    )
