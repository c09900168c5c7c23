"""`RedisBusBase`: what both Redis buses share; each bus's module keeps only its layout.

Shared: the client and its `check()`, the writer (a `TransactionAppender` behind a `BatchWriter`),
`publish()`/`flush()`, LogID bookkeeping, subscriptions through the bus's tailer, `stop()` within
one deadline, `fork()`, and the common part of `stats()` and `repr()`.

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
import threading
import time
import weakref
from typing import Any, ClassVar, Final

import redis

from eventbus_core import (
    BaseEventBus,
    BusStats,
    Event,
    StopInProgress,
    bind_publish,
    check_buffer_size,
    check_count,
    check_seconds,
    get_logger,
    stop_wait,
)
from eventbus_core.batching import PublishPath, at_fork
from eventbus_redis._capabilities import RedisCapabilities
from eventbus_redis._client import TRANSIENT_ERRORS, describe_client
from eventbus_redis._config_errors import (
    counter_error,
    credentials_error,
    database_error,
    is_not_a_counter,
    permission_error,
    reporting_wrong_type,
    wrong_type_hint,
)
from eventbus_redis._reachable import check_reachable, tls_trouble
from eventbus_redis._redis_subscription import RedisSubscription
from eventbus_redis._scripts import tail_of
from eventbus_redis._settings import MAX_LEN_LIMIT
from eventbus_redis._tail import Cursor, Tailer
from eventbus_redis._tx_appender import TransactionAppender
from eventbus_redis._writer import BatchWriter

__all__ = ["RedisBusBase"]

log = get_logger("eventbus.redis")

_SUBSCRIBE_FLUSH: Final = 1.0  # seconds subscribe() waits at most for the writer
# Seconds a subscription's lag question may take (one round trip): longer than a scrape waits
# (2 s), so that a frozen Redis keeps it out and later scrapes do not ask again meanwhile, as
# for a stream's XINFO (trial 211: every scrape waited 1 s).
_LAG_TIMEOUT: Final = 10.0


class RedisBusBase(RedisCapabilities, BaseEventBus):
    """Base of `RedisEventBus` and `RedisStreamsEventBus`, with their capabilities
    (`_capabilities.py`: the bus sets `_kind` and `_layout`). A bus sets its own fields, calls
    `_start()`, and defines its layout (`_script_options`, `_transaction`), `_new_tailer`,
    `_behind`, and `subscribe()`, `stats()`, `__repr__` by `_subscribe()`, `_stats()`, `_repr()`.
    """

    _backend: ClassVar[str]  # the backend's name, as in stats().extra["backend"]
    _setting: ClassVar[str]  # the setting that names the written key (for WRONGTYPE errors)
    _target_type: ClassVar[str]  # what that key holds (Redis's TYPE): "list" or "stream"
    _tailer: Tailer | None
    _owns_client = False  # built by from_settings(): stop() closes its idle connections
    _url_source: str | None = None  # built by from_settings(): the setting(s) of the address

    def _start(
        self,
        client: redis.Redis,
        target: str,
        script: str,
        *,
        max_len: int,
        buffer_size: int,
        stop_timeout: float,
        max_batch: int,
        publish_path: PublishPath = "auto",
    ) -> None:
        """Set up the writer and the shared state; `target` is the list or stream written,
        `script` its append script."""
        if not isinstance(getattr(client, "connection_pool", None), redis.ConnectionPool):
            given: object = client  # typed as a client; a URL string is the usual mistake
            kind = type(given)
            got = (
                "a URL string"
                if isinstance(given, str | bytes)
                else kind.__module__ + "." + kind.__qualname__
            )
            raise TypeError(
                f"client must be a redis.Redis client (redis.Redis.from_url(url)), got {got}; "
                "or build the bus from settings: create_bus(), or "
                "from_settings(EventBusSettings(...))"
            )
        check_count("max_len", max_len, 0, "0: no trimming", maximum=MAX_LEN_LIMIT)
        check_seconds("stop_timeout", stop_timeout)
        self._client = client
        self._target = target
        self.seq_key = f"{target}:seq"
        self.max_len = max_len
        self.buffer_size = buffer_size
        self.stop_timeout = stop_timeout
        self.last_log_id = 0  # newest LogID this bus wrote
        self._tailer = None
        self._stopped = False
        self._stopping = StopInProgress()  # what a stop() made meanwhile waits for
        self._subs_lock = threading.Lock()  # subscribe() against stop()
        self._undecodable = 0
        appender = TransactionAppender(
            client,
            script,
            target,
            self._encode_batch,
            self._applied,
            commands=self._transaction,
            fixed=len(self._script_options()),
            target_type=self._target_type,
        )
        self._writer = BatchWriter(
            appender,
            buffer_size=buffer_size,
            max_batch=max_batch,
            name=f"eventbus-redis-writer[{target}]",
            wrong_type=wrong_type_hint(target, self._setting),
            explain=self._setting_at_fault,
            path=publish_path,
            exit_timeout=stop_timeout,
        )
        # The writer's batcher's own bound method: its True/False, as the memory bus gives it
        # (trial 235), in one Python call per event, not two.
        bind_publish(self, RedisBusBase.publish, self._writer.publish)
        _LIVE.add(self)

    # ------------------------------------------------------------------- the bus's layout

    def _script_options(self) -> list[Any]:
        """The append script's own arguments, which precede the events' tails."""
        raise NotImplementedError

    def _encode_batch(self, batch: list[Event]) -> tuple[list[str], list[Any]]:
        args = self._script_options()
        args += [tail_of(e) for e in batch]
        return [self._target, self.seq_key], args

    @staticmethod
    def _transaction(
        keys: list[str], options: list[Any], last: int, stamped: list[bytes]
    ) -> list[tuple[Any, ...]]:
        """The batch as MULTI/EXEC commands: what the script does, with LogIDs stamped."""
        raise NotImplementedError

    def _new_tailer(self) -> Tailer:
        """The thread that follows the target for this bus's subscriptions."""
        raise NotImplementedError

    def _behind(self, cursor: Cursor) -> int:
        """Events this bus wrote that `cursor`'s subscription has not been handed yet."""
        raise NotImplementedError

    def _consumers_to_fork(self) -> list[Any]:
        """Consumers to rebuild in a forked child (the streams bus has some)."""
        return []

    # ------------------------------------------------------------------------ connection

    def check(self, timeout: float = 2.0) -> None:
        """Return if Redis answers a PING within `timeout` seconds (the `Reachable` capability).

        The bus's own key is not looked at: a command may use other keys (the demo's, or
        `replay --source stream` on the list backend). What reads or writes a key of another
        type says so then, naming the setting and the backend that matches the key.

        Raises:
            BackendUnavailableError: it does not answer; the message says where, without the
                password.
            SettingsError: it refuses the credentials or the database.
        """
        check_reachable(self._client, timeout, self._url_source)

    def _setting_at_fault(self, exc: BaseException) -> str | None:
        """The message naming the setting at fault when Redis refused the database or the
        credentials (as `check()` says it), or the LogID counter is not a number (the
        wrong-type advice did not fit it, helper-114), else None."""
        if is_not_a_counter(exc):
            return str(counter_error(self.seq_key, self._setting))
        db = self._client.connection_pool.connection_kwargs.get("db", 0)
        refused = database_error(exc, db, self._url_source) or credentials_error(
            exc, describe_client(self._client), self._url_source
        )
        if refused is not None:
            return str(refused)
        return permission_error(exc, [self._target, self.seq_key], self._setting) or (
            tls_trouble(
                self._client, exc, self._url_source, connected_before=self._writer.has_written
            )
        )

    def _wrong_type(self, *more: str) -> contextlib.AbstractContextManager[None]:
        """A WRONGTYPE reply becomes a `SettingsError` naming the bus's key setting."""
        keys = [self._target, self.seq_key, *more]
        return reporting_wrong_type(self._client, keys, self._setting)

    # -------------------------------------------------------------------------- publishing

    def publish(self, event: Event) -> bool:
        """Buffer `event` for the writer and return at once (True); never blocks, never raises.

        A full buffer (Redis slow or down) or a stopped bus counts the event as dropped
        (False). (Each instance replaces this method with its writer's `publish`, which does
        exactly this: `eventbus_core.bind_publish`.)
        """
        return self._writer.publish(event)

    def _applied(self, last: Any) -> None:
        # The newest batch's last LogID, not the highest seen: batches are written one after
        # another, so a lower one means the counter started over (Redis lost its data), and
        # stop() waited its whole time for subscriptions to reach the old counter's LogIDs,
        # then counted what they had received as dropped (trial 151). A retried batch that had
        # been applied already replies with its own last LogID, as when it was applied.
        self.last_log_id = int(last)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Return True once every event published so far is in Redis (False on timeout)."""
        return self._writer.flush(timeout)

    # ------------------------------------------------------------------------ subscriptions

    def _subscribe(self, name: str | None, buffer_size: int | None) -> RedisSubscription:
        sub = RedisSubscription(
            check_buffer_size(buffer_size, self.buffer_size),
            name=name,
            on_close=self._unsubscribe,
        )
        self._write_accepted()
        with self._subs_lock:
            if self._stopped:
                sub.finish()
                return sub
            if self._tailer is None:
                self._tailer = self._new_tailer()
            start: Any = None  # Redis is down: start from "now" once it answers
            extra: dict[str, Any] = {}
            with contextlib.suppress(*TRANSIENT_ERRORS), self._wrong_type():
                start, extra = self._tailer.now()
            tailer = self._tailer
            tailer.add(sub, start, extra)
            if tailer.lag_from_unhanded:
                sub.count_unhanded = lambda: tailer.unhanded_to(sub, _LAG_TIMEOUT)
        return sub

    def _count_undecodable(self, n: int) -> None:
        self._undecodable += n

    def _unsubscribe(self, sub: Any) -> None:
        if self._tailer is None:
            return
        # Closed behind the log, it never gets those events: counted as dropped for it, as a
        # full buffer's would be on the memory bus (the list log counts them; trial 175).
        missed = self._tailer.remove(sub)
        if getattr(sub, "uncounted_at_close", False):
            # Redis frozen or gone at the close: what it left unread is in no figure, which
            # must be said (trial 182: 700 of 1,000, no line, a dispatcher exited 0).
            log.warning(
                "eventbus redis subscription %s closed, but Redis did not count the events it "
                "left unread past what it was handed (it did not answer in time, or, for a "
                "stream, keeps no count of entries added, before Redis 7): those are counted "
                "nowhere (they stay in Redis, for eventbus replay)",
                sub.name,
            )
        if missed:
            # INFO: the consumer's own figures say it (the dispatcher's ERROR and exit 1); a
            # viewer (`eventbus tail`) closing behind is no loss to warn of (trial 179).
            log.info(
                "eventbus redis subscription %s closed %d event(s) behind the log: it never "
                "received them (counted in its dropped; what Redis still holds of them can be "
                "replayed with eventbus replay)",
                sub.name,
                missed,
            )

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

    # ---------------------------------------------------------------------------- lifecycle

    def stop(self, timeout: float | None = None) -> None:
        """Write what was accepted, deliver it to this bus's subscriptions, then end them, all
        within `timeout` seconds (default `stop_timeout`; `math.inf`: no limit; NaN raises
        `ValueError` and stops nothing). Idempotent; on the calling thread it does no
        network I/O but one bounded count per open subscription, within the deadline, so it
        returns in time whatever state Redis is in.

        Accepted events Redis had not confirmed when the time runs out are counted in
        `stats().lost`; those of a batch Redis may have applied without the writer reading its
        reply are also counted in `extra["in_doubt"]`. Redis refuses the rest, even later (see
        docs/backends/redis.md, "stop() and lost").
        """
        self._stop_within(timeout)

    def _stop_within(self, timeout: float | None) -> None:
        """Stop the writer, then the subscriber thread, both by one deadline. Idempotent."""
        wait = stop_wait(timeout, self.stop_timeout)  # a NaN raises before anything stops
        with self._subs_lock:
            first = not self._stopped
            self._stopped = True
            if first:
                self._stopping.start()
        if not first:
            self._stopping.wait(wait)
            return
        try:
            deadline = time.monotonic() + wait
            self._writer.close(deadline)
            tailer = self._tailer
            if tailer is not None:
                tailer.stop(self._behind, deadline)
            if self._owns_client:
                # Idle connections only (closing a socket waits for nobody); a consumer still
                # reading keeps its own. Reading after stop() (read_events) reconnects.
                with contextlib.suppress(Exception):
                    self._client.connection_pool.disconnect(inuse_connections=False)
        finally:
            self._stopping.finish()

    # -------------------------------------------------------------------------------- stats

    def _stats(self, where: dict[str, Any], more: dict[str, Any]) -> BusStats:
        """`stats()` with no I/O: `where` (the keys) after the backend's name, `more` (the
        bus's own figures) after the shared ones."""
        published, dropped, lost = self._writer.counts()
        tailer = self._tailer
        subscriptions = tailer.subscriptions if tailer else ()
        extra: dict[str, Any] = {
            "backend": self._backend,
            **where,
            "redis": describe_client(self._client),
            **self._writer.figures(),
            "lost": lost,  # the same as BusStats.lost (kept here for readers of `extra`)
            "last_log_id": self.last_log_id,
            "undecodable": self._undecodable,
            "gaps": tailer.gaps if tailer else 0,
            "trimmed": (tailer.closed_trimmed if tailer else 0)
            + sum(s.trimmed for s in subscriptions),
            **more,
            "stopped": self._stopped,
        }
        return BusStats(
            published,
            dropped,
            lost=lost,
            queue_depth=self._writer.queue_depth(),
            subscribers=tuple(s.stats() for s in subscriptions),
            extra=extra,
        )

    def _repr(self, fields: str) -> str:
        state = "stopped" if self._stopped else self._writer.state
        return f"<{type(self).__name__} {state} {describe_client(self._client)} {fields}>"

    # ---------------------------------------------------------------------------------- fork

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
        self._stopping = self._stopping.after_fork_in_child(self._stopped)
        self._writer.after_fork_in_child()
        if self._tailer is not None:
            self._tailer.after_fork_in_child()
        for consumer in self._consumers_to_fork():
            consumer.after_fork_in_child()


_LIVE: weakref.WeakSet[RedisBusBase] = weakref.WeakSet()


def _each(hook: str) -> None:
    for bus in list(_LIVE):
        try:
            getattr(bus, hook)()
        except Exception:  # a fork hook must never take the process down
            log.exception("eventbus redis: %s failed for %r", hook, bus)


at_fork(
    before=lambda: _each("_before_fork"),
    after_in_parent=lambda: _each("_after_fork_in_parent"),
    after_in_child=lambda: _each("_after_fork_in_child"),
)
