"""`RedisCapabilities`: what both Redis buses offer beyond publishing and subscribing.

CrossProcess, ReadableLog and LogSources (the list `log` and the `stream`, either one readable
from either bus), Describable and Isolatable (see `eventbus_core.capabilities`). A mixin of
`RedisBusBase`, the base of both Redis buses; the readers and figures are in `_readers.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventbus_core import Event, EventBusSettings, RedactedURL
from eventbus_core.capabilities import Isolation
from eventbus_redis._readers import ListLog, StreamLog, answering

__all__ = ["RedisCapabilities", "RedisLayout"]

_DEMO_PREFIX = "eventbus-demo"


@dataclass(frozen=True)
class RedisLayout:
    """The keys a Redis bus was configured with, and which of them the user named.

    Kept beside the bus so that `eventbus replay --source` can read the other layout's log,
    and the demo knows whose keys it may delete.
    """

    key: str = "llm-proxy-events"
    stream: str = "llm-proxy-events"
    group: str = "llm-proxy-dispatchers"
    key_given: bool = False
    stream_given: bool = False
    max_len: int = 10_000
    stream_max_len: int = 10_000
    url: RedactedURL | None = None

    @classmethod
    def from_settings(cls, settings: EventBusSettings) -> RedisLayout:
        """The layout of `settings` (`EVENTBUS_REDIS_*`, `REDIS_URL`)."""
        given = settings.model_fields_set
        return cls(
            key=settings.redis_key,
            stream=settings.redis_stream,
            group=settings.redis_group,
            key_given="redis_key" in given,
            stream_given="redis_stream" in given,
            max_len=settings.redis_max_len,
            stream_max_len=settings.redis_stream_max_len,
            # Kept masked in reprs, as in the settings: the demo's isolation hands it on, and
            # its repr showed the password (trial 139).
            url=RedactedURL(str(settings.redis_url)) if settings.redis_url else None,
        )


class RedisCapabilities:
    """Capabilities of a Redis bus; `_kind` says which log is its own ("log" or "stream")."""

    _client: Any
    _layout: RedisLayout
    _kind: str

    @property
    def cross_process(self) -> bool:
        """True: every process connected to the same Redis sees these events."""
        return True

    # ------------------------------------------------------------------ ReadableLog

    @property
    def log_sources(self) -> tuple[str, ...]:
        """`log` and `stream`, the bus's own first; and on the stream backend, whose consumer
        groups dead-letter, `dead`."""
        return ("log", "stream") if self._kind == "log" else ("stream", "log", "dead")

    def log_source(self, name: str) -> ListLog | StreamLog:
        """The list log (`log`, at EVENTBUS_REDIS_KEY), the stream (`stream`, at
        EVENTBUS_REDIS_STREAM) or the stream's consumer groups' dead letters (`dead`, at
        `<stream>:dead`: each entry's `data` is the event it gave up, with its LogID) on this
        bus's Redis.

        Raises:
            ValueError: another name.
        """
        running = "redis" if self._kind == "log" else "redis-streams"
        if name == "log":
            return ListLog(self._client, self._layout.key, running=running)
        if name == "stream":
            return StreamLog(self._client, self._layout.stream, running=running)
        if name == "dead" and self._kind == "stream":
            # Read back after the cause is fixed (`eventbus replay --source dead --sink ...`):
            # there was no way but a setting pointed at the key by hand (trial 244).
            return StreamLog(self._client, self._dead_stream(), running=running)
        *rest, last = self.log_sources
        raise ValueError(f"no log {name!r} in Redis: choose {', '.join(rest)} or {last}")

    def _dead_stream(self) -> str:
        """Key of the dead letters of the stream's consumer groups."""
        return f"{self._layout.stream}:dead"

    def _own(self) -> ListLog | StreamLog:
        return self.log_source(self._kind)

    @property
    def time_index(self) -> bool:
        """True for the stream (entry ids are times), False for the list log."""
        return self._kind == "stream"

    def read_range(
        self,
        first_id: int | None = None,
        last_id: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Event | None]:
        """Events of the bus's own log with LogID in [first_id, last_id] (and, on a stream,
        added within [since, until]), oldest first; None per undecodable entry.

        Raises:
            ValueError: a time range on the list log (it keeps no timestamps).
            BackendUnavailableError: Redis does not answer.
        """
        return self._own().read_range(first_id, last_id, since=since, until=until)

    def newest(self, n: int) -> list[Event]:
        """The `n` newest events of the bus's own log, oldest first."""
        return self._own().newest(n)

    # ------------------------------------------------------------------ Describable

    @property
    def location(self) -> str:
        """`key KEY` or `stream STREAM`."""
        return self._own().location

    def describe(self) -> Mapping[str, Any]:
        """Figures read from Redis, across every process (see `eventbus stats`).

        On the stream: `group`, the configured group (EVENTBUS_REDIS_GROUP), and
        `group_exists`: a misspelt group was not told from the others (trial 244). `eventbus
        dispatch` makes `GROUP:SINK` groups unless `--consumer-groups shared`: those are in
        `groups`.

        Raises:
            BackendUnavailableError: Redis does not answer.
        """
        figures = dict(self._own().describe())
        if self._kind == "stream":
            group = self._layout.group
            names = [g["name"] for g in figures.get("groups", ())]
            figures["group"] = group
            figures["group_exists"] = group in names
            # `eventbus dispatch` reads GROUP:SINK groups (per sink, the default): the right
            # group then "did not exist", as a misspelt one does (trial 251).
            sinks = [n for n in names if n.startswith(f"{group}:")]
            figures["sink_groups"] = ", ".join(sinks) or "none"
        return figures

    # ------------------------------------------------------------------ Isolatable

    def isolate(self, run: str, events: int) -> Isolation:
        """Keys of the run's own (`eventbus-demo:<run>:events` and what the backend keeps
        beside it, deleted by `cleanup`), unless the user named the key; the consumer group
        is always the run's own (on a stream of the user's, starting at its end).

        Raises:
            BackendUnavailableError: Redis does not answer.
        """
        layout = self._layout
        stream = self._kind == "stream"
        base = f"{_DEMO_PREFIX}:{run}"
        given = layout.stream_given if stream else layout.key_given
        name = (layout.stream if stream else layout.key) if given else f"{base}:events"
        var = "EVENTBUS_REDIS_STREAM" if stream else "EVENTBUS_REDIS_KEY"
        env = {var: name, "EVENTBUS_REDIS_GROUP": base}
        if stream:
            # Go's names for the same settings, given the same values: with the Go proxy's set
            # in the environment, each demo process warned that EVENTBUS_REDIS_STREAM, which
            # the user never set, differed from them (trial 186).
            env |= {"REDIS_STREAM_KEY": name, "REDIS_CONSUMER_GROUP": base}
        if layout.url:
            env["REDIS_URL"] = layout.url
        if not given:
            # The run's own key keeps every event of the run: trimming would lose some before
            # the dispatcher read them, and the counts would no longer be exact.
            length = layout.stream_max_len if stream else layout.max_len
            max_var = "EVENTBUS_REDIS_STREAM_MAX_LEN" if stream else "EVENTBUS_REDIS_MAX_LEN"
            env[max_var] = str(max(length, events) if length else 0)
            if stream:
                env["REDIS_STREAM_MAX_LEN"] = env[max_var]
        elif stream:
            # A new group on an existing stream would start at its beginning: start at its end.
            _create_group(self, name, base)
        cleanup = _Cleanup(self._client, var, name, base, given, stream)
        return Isolation(
            env=env, where=name, kind="redis stream" if stream else "redis key", cleanup=cleanup
        )


@answering
def _create_group(bus: RedisCapabilities, stream: str, group: str) -> None:
    bus._client.xgroup_create(stream, group, id="$", mkstream=True)


@dataclass
class _Cleanup:
    _client: Any
    var: str
    name: str
    base: str
    given: bool
    stream: bool

    @answering
    def __call__(self, keep: bool) -> str:
        if keep:
            return f"kept (--keep): {self.var}={self.name} eventbus stats shows it"
        if not self.given:
            keys = list(self._client.scan_iter(match=f"{self.base}:*", count=1000))
            if keys:
                self._client.delete(*keys)
            return f"deleted at the end ({len(keys)} keys)"
        if self.stream:
            self._client.xgroup_destroy(self.name, self.base)
            return f"yours ({self.var}): left in place, the demo's group {self.base} removed"
        return f"yours ({self.var}): left in place"
