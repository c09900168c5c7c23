"""The Redis logs read again: `ReadableLog` and the figures of `Describable`, for both layouts.

`ListLog` reads the LIST log (`redis` backend; LogIDs only, the list keeps no timestamps) and
`StreamLog` the stream (`redis-streams`; LogIDs and time, since an entry id is the millisecond
it was added). Both are what `eventbus replay`, `eventbus tail -n` and `eventbus stats` use
through `eventbus_core.capabilities`; a Redis error becomes `BackendUnavailableError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar, ParamSpec, TypeVar

import redis

from eventbus_core import (
    BackendUnavailableError,
    Event,
    SettingsError,
    WireFormatError,
)
from eventbus_redis._client import describe_client, safe_error
from eventbus_redis._config_errors import counter_value, is_wrong_type, wrong_type_error
from eventbus_redis._group_lag import group_lag
from eventbus_redis._stream_entry import event_from_stream_entry

__all__ = ["ListLog", "StreamLog", "answering"]

_PAGE = 1000
DROPPED_NOTE = (
    "not kept in Redis: each publishing process counts its own drops "
    "(bus.stats().dropped, see docs/operations.md)"
)

P = ParamSpec("P")
R = TypeVar("R")


def _unavailable(client: Any, exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"Redis at {describe_client(client)} failed ({safe_error(exc)}); is it running, and "
        "is REDIS_URL (or --redis-url) right?"
    )


def answering(func: Callable[P, R]) -> Callable[P, R]:
    """Report a Redis failure of a reader method (`self._client`) as `BackendUnavailableError`,
    and a WRONGTYPE reply (a setting names a key of another type) as `SettingsError`: the
    reader's own (`wrong_type_error()`, saying what its key holds) where it has one."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except BackendUnavailableError:
            raise
        except (redis.RedisError, OSError) as exc:
            if is_wrong_type(exc):  # Redis answered: a setting names someone else's key
                own = getattr(args[0], "wrong_type_error", None)
                if callable(own):
                    raise own() from None
                raise SettingsError(
                    f"Redis refused: {safe_error(exc)}: a key the backend uses holds another "
                    "type of value. If it is the Go llm-proxy's or another eventbus's log, "
                    "choose the backend that matches it (LLM_PROXY_EVENT_BUS or --backend: "
                    "'redis' for a list, 'redis-streams' for a stream); else set "
                    "EVENTBUS_REDIS_KEY (backend redis) or EVENTBUS_REDIS_STREAM "
                    "(redis-streams) to a key of its own"
                ) from None
            if isinstance(exc, redis.exceptions.NoPermissionError):
                # Redis answered: "is it running?" was no help for an ACL refusal (trial 209).
                raise _refused(args[0], exc) from None
            raise _unavailable(getattr(args[0], "_client", None), exc) from None

    return run


def _refused(reader: object, exc: BaseException) -> SettingsError:
    """An ACL refusal of a reader's command or keys, naming the log's key and its setting."""
    key = getattr(reader, "key", None)
    if key is not None:
        named = f"the list {key} (EVENTBUS_REDIS_KEY) and {key}:seq"
    else:
        stream = getattr(reader, "stream", "?")
        named = f"the stream {stream} (EVENTBUS_REDIS_STREAM) and {stream}:*"
    return SettingsError(
        f"Redis refused: {safe_error(exc)}: the ACL user of REDIS_URL (or --redis-url) may not "
        f"read {named}, or may not run the command; grant it what docs/backends/redis.md lists "
        "('A Redis user restricted by ACLs'), or set the key setting to a key it may use"
    )


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _in_range(event: Event, first: int | None, last: int | None) -> bool:
    if first is not None and event.log_id < first:
        return False
    return last is None or event.log_id <= last


class _Undecodable:
    """Places the undecodable entries of a LogID range [first, last]. One has no LogID, but
    its decodable neighbours place it: it is outside when the newer one is at or below
    `first`, or the older one at or above `last`. Counted anywhere, a stray entry newer than
    the range made every backfill of it exit 1 (trial 229). Read `newest_first` (the list) or
    oldest first (the stream): the neighbour read before an entry is then the newer, or the
    older one.
    """

    def __init__(self, first: int | None, last: int | None, *, newest_first: bool) -> None:
        self._first, self._last = first, last
        self._newest_first = newest_first
        self._before: int | None = None  # LogID of the decodable entry read just before
        self._pending = 0  # undecodable since then, placed by the next decodable one

    def entry(self) -> None:
        """An undecodable entry, read after `_before`."""
        before = self._before
        if before is not None:
            if self._newest_first and self._first is not None and before <= self._first:
                return  # below the range
            if not self._newest_first and self._last is not None and before >= self._last:
                return  # above the range
        self._pending += 1

    def event(self, log_id: int) -> int:
        """A decodable entry with `log_id`, the other neighbour of those pending: how many of
        them lie within the range."""
        if self._newest_first:
            within = self._last is None or log_id < self._last
        else:
            within = self._first is None or log_id > self._first
        placed = self._pending if within else 0
        self._pending, self._before = 0, log_id
        return placed

    def end(self) -> int:
        """The entries still pending when reading stopped: within the range, unless reading
        stopped past it (then the caller drops them)."""
        placed, self._pending = self._pending, 0
        return placed


def _log_id(raw: Any) -> int | None:
    if raw is None:
        return None
    try:
        return Event.from_json(raw).log_id
    except WireFormatError:
        return None


class ListLog:
    """The LIST log at `key` (newest at index 0), with its LogID counter `key:seq`."""

    time_index = False
    setting: ClassVar[str] = "EVENTBUS_REDIS_KEY"  # names `key`, in messages

    def __init__(self, client: Any, key: str, *, running: str | None = None) -> None:
        self._client = client
        self.key = key
        self.running = running  # the backend of the bus that opened this reader, if known

    def wrong_type_error(self) -> SettingsError:
        """What `answering` raises for a WRONGTYPE reply: what the key holds, as `tail` says
        it (`stats` quoted the pipeline's raw error, helper-113)."""
        keys = [self.key, f"{self.key}:seq"]
        return wrong_type_error(self._client, keys, self.setting, running=self.running)

    @property
    def location(self) -> str:
        """`key KEY`."""
        return f"key {self.key}"

    def read_range(
        self,
        first_id: int | None = None,
        last_id: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Event | None]:
        """Events with LogID in [first_id, last_id], oldest first; None per undecodable entry.

        The list is read from its newest end in pages. Entries pushed meanwhile shift it, so
        pages may overlap: LogIDs already seen are skipped. A Go writer stamps (INCR) and
        pushes (LPUSH) in two commands, so the list is only roughly in LogID order: reading
        stops after a page entirely older than the range, and the result is sorted by LogID.

        Raises:
            ValueError: `since` or `until` given (the list keeps no timestamps).
            BackendUnavailableError: Redis does not answer.
        """
        if since is not None or until is not None:
            raise ValueError(
                "the list log keeps no timestamps: select it by LogID, or read the stream "
                "(--source stream) to select by time: the one EVENTBUS_REDIS_STREAM names "
                "(llm-proxy-events by default, also the list's default key: in one database "
                "they need keys of their own), which holds events only if something writes "
                "them there (a Go llm-proxy, or the redis-streams backend)"
            )
        events, bad = self._read(first_id, last_id)
        items: list[Event | None] = [None] * bad
        items.extend(events)
        return iter(items)

    @answering
    def _read(self, first: int | None, last: int | None) -> tuple[list[Event], int]:
        found: list[Event] = []
        seen: set[int] = set()
        bad = _Undecodable(first, last, newest_first=True)
        counted = 0
        start = 0
        while True:
            page = self._client.lrange(self.key, start, start + _PAGE - 1)
            if not page:
                counted += bad.end()
                break
            newest_on_page = 0
            for raw in page:  # newest first
                try:
                    event = Event.from_json(raw)
                except WireFormatError:
                    bad.entry()
                    continue
                if event.log_id:
                    counted += bad.event(event.log_id)
                    if event.log_id in seen:
                        continue  # read on the previous page already (the list grew)
                    seen.add(event.log_id)
                    newest_on_page = max(newest_on_page, event.log_id)
                if _in_range(event, first, last):
                    found.append(event)
            if first is not None and 0 < newest_on_page < first:
                bad.end()  # those pending lie below the range, as the rest
                break  # everything further is older than the range
            start += _PAGE
        found.reverse()  # oldest first; events without a LogID keep their list order
        found.sort(key=lambda e: e.log_id)
        return found, counted

    @answering
    def newest(self, n: int) -> list[Event]:
        """The `n` newest events, oldest first (undecodable entries left out)."""
        if n <= 0:
            return []
        events = []
        for raw in self._client.lrange(self.key, 0, n - 1):
            try:
                events.append(Event.from_json(raw))
            except WireFormatError:
                continue
        events.reverse()
        return events

    @answering
    def describe(self) -> dict[str, Any]:
        """Published (the counter), retained, trimmed or expired, newest/oldest LogID, TTL."""
        pipe = self._client.pipeline(transaction=False)
        pipe.get(f"{self.key}:seq").llen(self.key).lindex(self.key, 0).lindex(self.key, -1)
        pipe.ttl(self.key)
        seq, length, newest, oldest, ttl = pipe.execute()
        published = counter_value(seq, f"{self.key}:seq", self.setting)
        return {
            "backend": "redis",
            "key": self.key,
            "published": published,
            "dropped": None,
            "dropped_note": DROPPED_NOTE,
            "length": int(length),
            "trimmed_or_expired": max(0, published - int(length)),
            "newest_log_id": _log_id(newest),
            "oldest_log_id": _log_id(oldest),
            "ttl_seconds": int(ttl) if int(ttl) >= 0 else None,
        }


def _stream_id(moment: datetime | None, default: str) -> str:
    if moment is None:
        return default
    return str(int(moment.timestamp() * 1000))


class StreamLog:
    """The stream `stream`, with its counter `stream:seq` and dead letters `stream:dead`."""

    time_index = True
    setting: ClassVar[str] = "EVENTBUS_REDIS_STREAM"  # names `stream`, in messages

    def __init__(self, client: Any, stream: str, *, running: str | None = None) -> None:
        self._client = client
        self.stream = stream
        self.running = running  # the backend of the bus that opened this reader, if known

    def wrong_type_error(self) -> SettingsError:
        """What `answering` raises for a WRONGTYPE reply (see `ListLog.wrong_type_error`)."""
        keys = [self.stream, f"{self.stream}:seq"]
        return wrong_type_error(self._client, keys, self.setting, running=self.running)

    @property
    def location(self) -> str:
        """`stream STREAM`."""
        return f"stream {self.stream}"

    def read_range(
        self,
        first_id: int | None = None,
        last_id: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Event | None]:
        """Events in order within the LogID and time ranges; None per undecodable entry.

        Raises:
            BackendUnavailableError: Redis does not answer (also while iterating).
        """
        start = _stream_id(since, "-")
        end = _stream_id(until, "+")
        if until is not None:
            end += "-18446744073709551615"  # every entry of that last millisecond
        bad = _Undecodable(first_id, last_id, newest_first=False)
        while True:
            entries = self._page(start, end)
            if not entries:
                yield from [None] * bad.end()
                return
            for entry_id, fields in entries:
                try:
                    event: Event | None = event_from_stream_entry(entry_id, fields)
                except WireFormatError:
                    event = None
                if event is None:
                    bad.entry()
                    continue
                if event.log_id:
                    yield from [None] * bad.event(event.log_id)
                if _in_range(event, first_id, last_id):
                    yield event
            start = "(" + str(_text(entries[-1][0]))

    @answering
    def _page(self, start: str, end: str) -> list[Any]:
        entries: list[Any] = self._client.xrange(self.stream, start, end, count=_PAGE)
        return entries

    @answering
    def newest(self, n: int) -> list[Event]:
        """The `n` newest entries' events, oldest first (undecodable entries left out)."""
        if n <= 0:
            return []
        events = []
        for entry_id, fields in self._client.xrevrange(self.stream, "+", "-", count=n):
            try:
                events.append(event_from_stream_entry(entry_id, fields))
            except WireFormatError:
                continue
        events.reverse()
        return events

    @answering
    def describe(self) -> dict[str, Any]:
        """Length, published, last id, dead letters and each consumer group's figures."""
        client, stream = self._client, self.stream
        figures: dict[str, Any] = {
            "backend": "redis-streams",
            "stream": stream,
            "dropped": None,
            "dropped_note": DROPPED_NOTE,
        }
        if not client.exists(stream):
            figures.update(length=0, published=0, groups=[], exists=False)
            return figures
        info = {_text(k): v for k, v in client.xinfo_stream(stream).items()}
        pipe = client.pipeline(transaction=False)
        pipe.get(f"{stream}:seq").xlen(f"{stream}:dead")
        seq, dead = pipe.execute()
        added = info.get("entries-added")
        # Python publishers stamp LogIDs from `<stream>:seq`; entries-added (Redis 7+) also
        # counts what Go wrote. Take the larger: both include trimmed entries.
        candidates = [counter_value(seq, f"{stream}:seq", self.setting)]
        candidates += [int(added)] if added is not None else []
        figures.update(
            exists=True,
            length=int(info.get("length", 0)),
            published=max(candidates) if candidates else None,
            last_id=_text(info.get("last-generated-id")),
            dead_letters=int(dead),
        )
        groups = []
        for group in client.xinfo_groups(stream):
            g = {_text(k): v for k, v in group.items()}
            groups.append(
                {
                    "name": _text(g.get("name")),
                    "consumers": int(g.get("consumers", 0)),
                    "pending": int(g.get("pending", 0)),
                    "lag": group_lag(g, info),
                    "last_delivered_id": _text(g.get("last-delivered-id")),
                }
            )
        figures["groups"] = groups
        return figures
