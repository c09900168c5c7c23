"""`LogTailer`: follows a Redis LIST log for subscriptions, reading only what is new.

Each subscription's position is the last LogID it has been handed. One read-only script returns
the counter and the oldest entries newer than that position, atomically, so a look costs one
round trip and never re-reads the whole list. Writers PUBLISH on `key:notify` after each batch;
the tailer waits on that channel, so it wakes as soon as events land, and otherwise looks every
`poll` seconds (events pushed by the Go proxy, which does not notify, arrive that way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
from redis.client import PubSub

from eventbus_core import Event, WireFormatError
from eventbus_redis._scripts import LOG_READ_NEW, LOG_STILL_THERE
from eventbus_redis._tail import Cursor, Gap, Tailer

__all__ = ["LogTailer"]


class LogTailer(Tailer):
    """Moves new log entries into subscriptions, in LogID order, reporting gaps.

    Args:
        client: The Redis client.
        key: The list key.
        seq_key: The LogID counter key.
        channel: The notification channel ("" to rely on polling alone).
        poll: Longest wait between looks without a notification.
        on_undecodable: Called with the number of entries that did not decode.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        seq_key: str,
        channel: str,
        *,
        poll: float = 0.5,
        on_undecodable: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._keys = [key, seq_key]
        self._seq_key = seq_key
        self._channel = channel
        self._read_new = client.register_script(LOG_READ_NEW)
        self._still_there = client.register_script(LOG_STILL_THERE)
        self._pubsub: PubSub | None = None
        self._on_undecodable = on_undecodable
        super().__init__(name=f"eventbus-redis-tail[{key}]", poll=poll)

    def start_position(self) -> int:
        """The current LogID counter: a new subscriber receives what comes after it."""
        return int(self._client.get(self._seq_key) or 0)

    def prepare(self) -> None:
        """Subscribe to the notification channel before looking, so no wake-up is missed."""
        if self._channel and self._pubsub is None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
            except BaseException:
                pubsub.close()
                raise
            self._pubsub = pubsub

    def wait(self, timeout: float) -> None:
        """Wait for a notification (or `timeout`), then swallow any that queued up meanwhile."""
        pubsub = self._pubsub
        if pubsub is None:
            super().wait(timeout)
            return
        if pubsub.get_message(timeout=timeout) is not None:
            while pubsub.get_message(timeout=0) is not None:
                pass

    def reset_connection(self) -> None:
        """Forget the pub/sub connection; `prepare()` makes a new one. Redis may have restarted
        meanwhile: each position is checked against the log before the next read."""
        for cursor in self._cursors:
            cursor.extra["verify"] = True
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                pubsub.close()

    def interrupt(self) -> None:
        """Wake this process's (and others') tailers at once by a notification."""
        if self._channel:
            # Best effort: the tailer wakes within `poll` anyway.
            with contextlib.suppress(Exception):
                self._client.publish(self._channel, "0")

    def read(self, cursor: Cursor, max_items: int) -> bool:
        """Hand the subscription the oldest entries newer than its position; report gaps."""
        last: int = cursor.position
        sub = cursor.sub
        verify = cursor.extra.pop("verify", False) and last and "head" in cursor.extra
        if verify and not self._still_there(keys=self._keys, args=[last, cursor.extra["head"]]):
            sub.report_gap(Gap(last, None, "Redis restarted without its data"))
            self.gaps += 1
            cursor.position = 0
            return True
        reply: Any = self._read_new(keys=self._keys, args=[last, max_items])
        seq, lo, hi, items = int(reply[0]), int(reply[1]), int(reply[2]), reply[3]
        if seq < last:
            # The counter went backwards: Redis lost its data (flush, failover, restart without
            # persistence). Carry on from the new counter's start: its events are all new.
            sub.report_gap(Gap(last, None, f"LogID counter went back from {last} to {seq}"))
            self.gaps += 1
            cursor.position = 0
            return True
        if hi < 0:
            # Nothing to read. If the counter is ahead of an empty list (expired, or a Go
            # writer between its INCR and LPUSH), the gap, if any, shows once entries arrive.
            return False
        oldest = seq - hi  # index i holds LogID seq - i
        if oldest > last + 1:
            sub.report_gap(Gap(last, oldest - last - 1, "trimmed before it was read"))
            self.gaps += 1
        events: list[Event] = []
        bad = 0
        for raw in reversed(items):
            try:
                event = Event.from_json(raw)
            except WireFormatError:
                bad += 1
                continue
            events.append(event)
        if bad:
            self.undecodable += bad
            if self._on_undecodable is not None:
                self._on_undecodable(bad)
        cursor.position = seq - lo
        cursor.extra["head"] = items[0]  # the entry now at our position, for `verify`
        if events:
            taken = sub.offer(events)
            if taken < len(events):
                sub.count_dropped(len(events) - taken)
            sub.last_log_id = max(sub.last_log_id, events[taken - 1].log_id if taken else 0)
        return True
