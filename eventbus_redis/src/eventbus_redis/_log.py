"""`RedisEventBus`: the Go llm-proxy's Redis LIST log, written in batches with atomic LogIDs.

Settings read by the `redis` backend factory: `REDIS_URL` (redis_url; when unset, the Go
llm-proxy's `REDIS_ADDR` and `REDIS_DB`), `OBSERVABILITY_BUFFER_SIZE` (buffer_size),
`EVENTBUS_STOP_TIMEOUT` (stop_timeout), `EVENTBUS_REDIS_KEY` (redis_key, default
`llm-proxy-events`: the key the Go proxy writes), `EVENTBUS_REDIS_TTL` (redis_ttl) and
`EVENTBUS_REDIS_MAX_LEN` (redis_max_len).

Layout, shared with the Go original: each event is one JSON string in the Go wire format in the
list at `key`, pushed with LPUSH (newest at index 0); the LogID counter is `key:seq`; LTRIM keeps
`max_len` newest; EXPIRE applies `ttl` to the list. Added: after each batch the writer PUBLISHes
the newest LogID on channel `key:notify`, which wakes subscribers in every process at once.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from typing import Any, Self

import redis

from eventbus_core import (
    BaseEventBus,
    BusStats,
    Event,
    EventBusSettings,
    WireFormatError,
    check_buffer_size,
    get_logger,
)
from eventbus_redis._client import (
    TRANSIENT_ERRORS,
    client_from_settings,
    describe_client,
    ttl_seconds,
)
from eventbus_redis._config_errors import reporting_wrong_type, wrong_type_hint
from eventbus_redis._lifecycle import RedisBusLifecycle
from eventbus_redis._log_tail import LogTailer
from eventbus_redis._reachable import check_reachable
from eventbus_redis._redis_subscription import RedisSubscription
from eventbus_redis._scripts import LOG_APPEND, tail_of
from eventbus_redis._tail import Cursor
from eventbus_redis._tx_appender import TransactionAppender
from eventbus_redis._writer import BatchWriter

__all__ = ["RedisEventBus"]

log = get_logger("eventbus.redis")


class RedisEventBus(RedisBusLifecycle, BaseEventBus):
    """Event bus on a Redis LIST, layout-compatible with the Go llm-proxy.

    `publish()` only appends to a bounded buffer; a background writer sends each batch in one
    round trip (an optimistic WATCH/MULTI transaction, or the Lua append script after a
    conflict: the counter, LPUSH of the batch, LTRIM, EXPIRE, PUBLISH), so the list order is
    exactly LogID order with any number of publishing processes.

    Prefer the constructors `publisher()`, `log()` and `from_settings()`.

    Args:
        client: A `redis.Redis` (or fakeredis) client; it may point at an unreachable server.
        key: The list key; the LogID counter is `key:seq`.
        ttl: Expiry of the list after each write (`timedelta` or seconds; 0/None: none).
        max_len: Newest events kept (0: no trimming).
        buffer_size: Events `publish()` buffers before dropping and counting more.
        stop_timeout: Seconds `stop()` waits at most to write what was accepted.
        max_batch: Most events per round trip.
        notify: PUBLISH on `key:notify` after each batch so subscribers wake at once.
        poll: Longest a subscriber waits before looking at the list without a notification
            (what bounds latency for events written by Go, which does not notify).
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str = "llm-proxy-events",
        *,
        ttl: timedelta | float | None = None,
        max_len: int = 0,
        buffer_size: int = 1000,
        stop_timeout: float = 5.0,
        max_batch: int = 500,
        notify: bool = True,
        poll: float = 0.5,
    ) -> None:
        if not key:
            raise ValueError("key must be a non-empty Redis key, e.g. 'llm-proxy-events'")
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0 (0: no trimming), got {max_len!r}")
        self._client = client
        self.key = key
        self.seq_key = f"{key}:seq"
        self.channel = f"{key}:notify" if notify else ""
        self.ttl = ttl_seconds(ttl)
        self.max_len = max_len
        self.buffer_size = buffer_size
        self.stop_timeout = stop_timeout
        self._poll = poll
        self.last_log_id = 0  # newest LogID this bus wrote
        self._tailer: LogTailer | None = None
        self._stopped = False
        self._subs_lock = threading.Lock()  # subscribe() against stop()
        self._undecodable = 0
        appender = TransactionAppender(
            client,
            LOG_APPEND,
            key,
            self._encode_batch,
            self._applied,
            commands=self._transaction,
            fixed=3,
        )
        self._writer = BatchWriter(
            appender,
            buffer_size=buffer_size,
            max_batch=max_batch,
            name=f"eventbus-redis-writer[{key}]",
            wrong_type=wrong_type_hint(key, "EVENTBUS_REDIS_KEY"),
        )
        self._track_forks()

    # ---------------------------------------------------------------------- constructors

    @classmethod
    def publisher(cls, client: redis.Redis, key: str, **options: Any) -> Self:
        """A bus that stamps LogIDs and appends, but neither trims nor expires (Go's publisher)."""
        return cls(client, key, ttl=None, max_len=0, **options)

    @classmethod
    def log(
        cls,
        client: redis.Redis,
        key: str,
        ttl: timedelta | float | None,
        max_len: int,
        **options: Any,
    ) -> Self:
        """A bus that keeps a log: LTRIM to `max_len` newest, EXPIRE `ttl` after each write."""
        return cls(client, key, ttl=ttl, max_len=max_len, **options)

    @classmethod
    def from_settings(cls, settings: EventBusSettings) -> Self:
        """Build the `redis` backend: log mode from `REDIS_URL` (or `REDIS_ADDR`/`REDIS_DB`) and
        the `EVENTBUS_REDIS_*` settings.

        Does not connect: the application starts even while Redis is unreachable.

        Raises:
            SettingsError: neither `REDIS_URL` nor `REDIS_ADDR` is set.
        """
        bus = cls.log(
            client_from_settings(settings),
            settings.redis_key,
            settings.redis_ttl,
            settings.redis_max_len,
            buffer_size=settings.buffer_size,
            stop_timeout=settings.stop_timeout,
        )
        bus._owns_client = True
        bus._url_source = settings.redis_url_source
        return bus

    def check(self, timeout: float = 2.0) -> None:
        """Return if Redis answers a PING within `timeout` seconds (the `Reachable` capability).

        Raises:
            BackendUnavailableError: it does not; the message says where, without the password.
        """
        check_reachable(self._client, timeout, self._url_source)

    # -------------------------------------------------------------------------- publishing

    def publish(self, event: Event) -> None:
        """Buffer `event` for the writer and return at once; never blocks, never raises.

        A full buffer (Redis slow or down) or a stopped bus counts the event as dropped.
        """
        self._writer.publish(event)

    def _encode_batch(self, batch: list[Event]) -> tuple[list[str], list[Any]]:
        args: list[Any] = [self.max_len, int(self.ttl * 1000), self.channel]
        args += [tail_of(e) for e in batch]
        return [self.key, self.seq_key], args

    @staticmethod
    def _transaction(
        keys: list[str], options: list[Any], last: int, stamped: list[bytes]
    ) -> list[tuple[Any, ...]]:
        """The batch as MULTI/EXEC commands: what LOG_APPEND does, with LogIDs stamped."""
        key, seq_key = keys
        max_len, ttl_ms, channel = options
        commands: list[tuple[Any, ...]] = [("SET", seq_key, last)]
        commands += [("LPUSH", key, *stamped[i : i + 1000]) for i in range(0, len(stamped), 1000)]
        if max_len > 0:
            commands.append(("LTRIM", key, 0, max_len - 1))
        if ttl_ms > 0:
            commands.append(("PEXPIRE", key, ttl_ms))
        if channel:
            commands.append(("PUBLISH", channel, last))
        return commands

    def _applied(self, last: Any) -> None:
        if int(last) > 0:  # -1: a retried batch that had been applied already
            self.last_log_id = int(last)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Return True once every event published so far is in Redis (False on timeout)."""
        return self._writer.flush(timeout)

    # ----------------------------------------------------------------------------- reading

    def read_events(self, start: int = 0, end: int = -1) -> list[Event]:
        """Return the events at list indexes `start..end` (LRANGE), newest first.

        Entries that do not decode are skipped and counted in `stats().extra["undecodable"]`.
        Works after `stop()`. Raises redis-py's errors if Redis cannot be reached, and
        `SettingsError` if the key holds another type of value (naming `EVENTBUS_REDIS_KEY`).
        """
        events: list[Event] = []
        with self._wrong_type():
            raws = self._client.lrange(self.key, start, end)
        for raw in raws:
            try:
                events.append(Event.from_json(raw))
            except WireFormatError:
                self._undecodable += 1
        return events

    def event_count(self) -> int:
        """Return the number of events in the list (LLEN). Works after `stop()`.

        Raises:
            SettingsError: the key holds another type of value (names `EVENTBUS_REDIS_KEY`).
        """
        with self._wrong_type():
            return int(self._client.llen(self.key))

    def _wrong_type(self) -> contextlib.AbstractContextManager[None]:
        """A WRONGTYPE reply becomes a `SettingsError` naming `EVENTBUS_REDIS_KEY`."""
        return reporting_wrong_type(self._client, [self.key, self.seq_key], "EVENTBUS_REDIS_KEY")

    # ------------------------------------------------------------------------ subscriptions

    def subscribe(
        self, name: str | None = None, *, buffer_size: int | None = None
    ) -> RedisSubscription:
        """Return a subscription to every event appended to the log from now on, by anyone.

        Events this bus accepted before are not delivered: the writer writes them first (it
        waits at most 1 s for that, and not at all while Redis is failing; then the subscription
        may receive those it had not written yet). Events arrive in LogID order; a subscriber
        in another process sees the same. If the
        log was trimmed past what it had read, or Redis lost its data, the subscription records
        a `Gap` in `sub.gaps` (and counts known misses in `sub.trimmed`).

        Raises:
            SettingsError: the key holds another type of value (names `EVENTBUS_REDIS_KEY`).
        """
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
                self._tailer = LogTailer(
                    self._client,
                    self.key,
                    self.seq_key,
                    self.channel,
                    poll=self._poll,
                    max_len=self.max_len,
                    on_undecodable=self._count_undecodable,
                )
            start: int | None = None  # Redis is down: start from "now" once it answers
            extra: dict[str, Any] = {}
            with contextlib.suppress(*TRANSIENT_ERRORS), self._wrong_type():
                start, extra = self._tailer.now()
            self._tailer.add(sub, start, extra)
        return sub

    def _count_undecodable(self, n: int) -> None:
        self._undecodable += n

    def _unsubscribe(self, sub: Any) -> None:
        if self._tailer is not None:
            self._tailer.remove(sub)

    # ---------------------------------------------------------------------------- lifecycle

    def stop(self, timeout: float | None = None) -> None:
        """Write what was accepted, deliver it to this bus's subscriptions, then end them, all
        within `timeout` seconds (default `stop_timeout`). Idempotent; does no network I/O on
        the calling thread, so it returns in time whatever state Redis is in.

        Accepted events Redis had not confirmed when the time runs out are counted in
        `stats().lost`; those of a batch Redis may have applied without the writer reading its
        reply are also counted in `extra["in_doubt"]`. Redis refuses the rest, even later (see
        docs/backends/redis.md, "stop() and lost").
        """
        self._stop_within(timeout)

    def _behind(self, cursor: Cursor) -> int:
        target = self.last_log_id
        position = cursor.position if cursor.position is not None else 0
        return max(0, target - int(position)) if target else 0

    def stats(self) -> BusStats:
        """`(published, dropped)`, `lost`, with writer state and log figures in `extra`."""
        published, dropped, lost = self._writer.counts()
        tailer = self._tailer
        subscriptions = tailer.subscriptions if tailer else ()
        extra: dict[str, Any] = {
            "backend": "redis",
            "key": self.key,
            "redis": describe_client(self._client),
            **self._writer.figures(),
            "lost": lost,  # the same as BusStats.lost (kept here for readers of `extra`)
            "last_log_id": self.last_log_id,
            "undecodable": self._undecodable,
            "gaps": tailer.gaps if tailer else 0,
            "trimmed": sum(s.trimmed for s in subscriptions),
            "subscriber_state": tailer.state if tailer else None,
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

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else self._writer.state
        return (
            f"<RedisEventBus {state} {describe_client(self._client)} key={self.key!r} "
            f"max_len={self.max_len} ttl={self.ttl:g}s buffer_size={self.buffer_size}>"
        )
