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

from datetime import timedelta
from typing import Any, ClassVar, Self

import redis

from eventbus_core import (
    BusStats,
    Event,
    EventBusSettings,
    WireFormatError,
    check_positive_seconds,
    get_logger,
)
from eventbus_core.batching import PublishPath
from eventbus_redis._base import RedisBusBase
from eventbus_redis._capabilities import RedisLayout
from eventbus_redis._client import client_from_settings, ttl_seconds
from eventbus_redis._config_errors import wrong_type_hint
from eventbus_redis._log_tail import LogTailer
from eventbus_redis._redis_subscription import RedisSubscription
from eventbus_redis._scripts import LOG_APPEND
from eventbus_redis._tail import Cursor

__all__ = ["RedisEventBus"]

log = get_logger("eventbus.redis")


class RedisEventBus(RedisBusBase):
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
        publish_path: Who writes (`EVENTBUS_PUBLISH_PATH`): `auto` (default) writes from the
            event loop publish() runs on, through an asyncio connection, else from a thread;
            `thread` always from a thread; `asyncio` as auto, warning when a thread must write.
        notify: PUBLISH on `key:notify` after each batch so subscribers wake at once.
        poll: Longest a subscriber waits before looking at the list without a notification
            (what bounds latency for events written by Go, which does not notify).
    """

    _backend: ClassVar[str] = "redis"
    _setting: ClassVar[str] = "EVENTBUS_REDIS_KEY"
    _target_type: ClassVar[str] = "list"
    _tailer: LogTailer | None

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
        publish_path: PublishPath = "auto",
        notify: bool = True,
        poll: float = 0.5,
    ) -> None:
        if not key:
            raise ValueError("key must be a non-empty Redis key, e.g. 'llm-proxy-events'")
        self.key = key
        self._kind = "log"
        self._layout = RedisLayout(key=key, key_given=True, max_len=max_len)
        self.channel = f"{key}:notify" if notify else ""
        self.ttl = ttl_seconds(ttl)
        # 0 looked at Redis thousands of times a second; below 0 failed every look.
        check_positive_seconds("poll", poll)
        self._poll = poll
        self._start(
            client,
            key,
            LOG_APPEND,
            max_len=max_len,
            buffer_size=buffer_size,
            stop_timeout=stop_timeout,
            max_batch=max_batch,
            publish_path=publish_path,
        )

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
        settings = EventBusSettings.expect(settings, "RedisEventBus.from_settings()")
        bus = cls.log(
            client_from_settings(settings),
            settings.redis_key,
            settings.redis_ttl,
            settings.redis_max_len,
            buffer_size=settings.buffer_size,
            stop_timeout=settings.stop_timeout,
            publish_path=settings.publish_path,
        )
        bus._owns_client = True
        bus._layout = RedisLayout.from_settings(settings)
        bus._url_source = settings.redis_url_source
        return bus

    # -------------------------------------------------------------------------- publishing

    def _script_options(self) -> list[Any]:
        return [self.max_len, int(self.ttl * 1000), self.channel]

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

    # ----------------------------------------------------------------------------- reading

    def read_events(self, start: int = 0, end: int = -1) -> list[Event]:
        """Return the events at list indexes `start..end` (LRANGE), newest first.

        Entries that do not decode are skipped and counted in `stats().extra["undecodable"]`.
        Works after `stop()`. Raises redis-py's errors if Redis cannot be reached, and
        `SettingsError` if the key holds another type of value (naming `EVENTBUS_REDIS_KEY`).

        Raises:
            TypeError: `start` or `end` is not an int (Redis's "not an integer" reply would
                otherwise read as a broken LogID counter).
        """
        for label, index in (("start", start), ("end", end)):
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(
                    f"read_events(): {label} must be an int list index (0 is the newest "
                    f"event, -1 the oldest), got {index!r}"
                )
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
        return self._subscribe(name, buffer_size)

    def _new_tailer(self) -> LogTailer:
        return LogTailer(
            self._client,
            self.key,
            self.seq_key,
            self.channel,
            poll=self._poll,
            max_len=self.max_len,
            on_undecodable=self._count_undecodable,
            wrong_type=wrong_type_hint(self.key, self._setting),
        )

    # ---------------------------------------------------------------------------- lifecycle

    def _behind(self, cursor: Cursor) -> int:
        target = self.last_log_id
        position = cursor.position if cursor.position is not None else 0
        return max(0, target - int(position)) if target else 0

    def stats(self) -> BusStats:
        """`(published, dropped)`, `lost`, with writer state and log figures in `extra`."""
        tailer = self._tailer
        state = {"subscriber_state": tailer.state if tailer else None}
        return self._stats({"key": self.key}, state)

    def __repr__(self) -> str:
        return self._repr(
            f"key={self.key!r} max_len={self.max_len} ttl={self.ttl:g}s "
            f"buffer_size={self.buffer_size}"
        )
