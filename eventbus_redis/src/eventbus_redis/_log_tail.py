"""`LogTailer`: follows a Redis LIST log for subscriptions, reading only what is new.

Each subscription remembers the raw entry it read last (its anchor) and the highest LogID it
was handed, where the anchor was and the entries below it (which tell it from an identical
entry pushed since). LPUSH adds only above the anchor and LTRIM removes only below it, so one
read-only script (LINDEX or LPOS, then LRANGE) returns exactly the new entries, whoever pushed
them and in whatever LogID order: a Go writer's separate INCR and LPUSH can land out of order,
and are still read once each. When the anchor is gone (trimmed,
expired, Redis lost its data) the whole list is new, and the LogIDs tell whether anything was
missed. Writers PUBLISH on `key:notify` after each batch; the tailer waits on that channel, so
it wakes as soon as events land, and otherwise looks every `poll` seconds (events pushed by the
Go proxy, which does not notify, arrive that way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
from redis.client import PubSub

from eventbus_core import Event, WireFormatError, get_logger
from eventbus_redis._entries import leading_log_id
from eventbus_redis._own_connection import cut_connection
from eventbus_redis._reachable import bounded_connection
from eventbus_redis._redis_subscription import Gap, RedisSubscription
from eventbus_redis._scripts import ANCHOR_CONTEXT, LOG_NOW, LOG_READ_NEW
from eventbus_redis._tail import Cursor, Tailer

__all__ = ["LogTailer"]

log = get_logger("eventbus.redis")


# LogIDs a subscription's first read may find missing below the oldest entry without calling it
# a gap: Go writers' INCRs whose LPUSH had not landed yet (one per request in flight).
_IN_FLIGHT = 64


def _read_new_args(place: dict[str, Any], max_items: int) -> list[bytes | str | int]:
    """LOG_READ_NEW's ARGV for a cursor's `place` (its `extra`: anchor, where it was, the
    entries below it), asking for up to `max_items` entries (0: only the counts)."""
    anchor: bytes | str | None = place.get("anchor")
    at: int | None = place.get("at")
    return [
        0 if anchor is None else 1,
        anchor or "",
        max_items,
        "" if at is None else at,
        ANCHOR_CONTEXT,
        *place.get("below", ()),
    ]


class LogTailer(Tailer):
    """Moves new log entries into subscriptions, in LogID order, reporting gaps.

    Args:
        client: The Redis client.
        key: The list key.
        seq_key: The LogID counter key.
        channel: The notification channel ("" to rely on polling alone).
        poll: Longest wait between looks without a notification.
        max_len: The length writers trim the list to (0: unknown, or not trimmed by us).
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
        max_len: int = 0,
        on_undecodable: Callable[[int], None] | None = None,
        wrong_type: str = "",
    ) -> None:
        self._client = client
        self._keys = [key, seq_key]
        self._seq_key = seq_key
        self._channel = channel
        self._now = client.register_script(LOG_NOW)
        self._read_new = client.register_script(LOG_READ_NEW)
        self._pubsub: PubSub | None = None
        self._max_len = max_len
        super().__init__(
            name=f"eventbus-redis-tail[{key}]",
            poll=poll,
            wrong_type=wrong_type,
            on_undecodable=on_undecodable,
        )

    def now(self) -> tuple[int, dict[str, Any]]:
        """Where a new subscriber starts: the LogID counter, and cursor state holding the
        newest entry as its anchor (it receives what is pushed above that entry)."""
        reply: Any = self._now(keys=self._keys, args=[ANCHOR_CONTEXT])
        head = reply[1] or None
        return int(reply[0]), {
            "anchor": head,
            "at": -int(reply[2]) if head else None,
            "below": list(reply[3]) if head else [],
        }

    def prepare(self) -> None:
        """Subscribe to the notification channel before looking, so no wake-up is missed."""
        if self._channel and self._pubsub is None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
            except redis.exceptions.NoPermissionError:
                pubsub.close()
                self._poll_only()
                return
            except BaseException:
                pubsub.close()
                raise
            self._pubsub = pubsub

    def _poll_only(self) -> None:
        """An ACL without SUBSCRIBE (or the channel): the wake-up is optional, polling finds the
        events. It failed every look, some 25 warnings a second (trial 195)."""
        log.warning(
            "eventbus redis: this Redis user may not SUBSCRIBE to %s: the subscription looks "
            "for new events every %.1f s instead of being woken at once",
            self._channel,
            self._poll,
        )
        self._channel = ""

    def wait(self, timeout: float) -> None:
        """Wait for a notification (or `timeout`), then swallow any that queued up meanwhile."""
        pubsub = self._pubsub
        if pubsub is None:
            super().wait(timeout)
            return
        try:
            if pubsub.get_message(timeout=timeout) is not None:
                while pubsub.get_message(timeout=0) is not None:
                    pass
        except redis.exceptions.NoPermissionError:  # the reply to SUBSCRIBE comes here
            self.reset_connection()
            self._poll_only()
            super().wait(timeout)

    def reset_connection(self) -> None:
        """Forget the pub/sub connection; `prepare()` makes a new one. (If Redis restarted
        meanwhile, the anchors are gone from the list and the next read notices.)"""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                pubsub.close()

    def interrupt(self) -> None:
        """Cut the pub/sub connection from another thread (no network I/O): the thread's wait
        for a notification ends at once."""
        pubsub = self._pubsub
        connection = getattr(pubsub, "connection", None)
        if connection is not None:
            cut_connection(connection)

    def forget_connection(self) -> None:
        """In a forked child: the pub/sub connection is the parent's; leave it alone."""
        self._pubsub = None

    counts_unhanded = True
    lag_from_unhanded = True

    def unhanded(self, place: dict[str, Any], timeout: float) -> int | None:
        """The entries pushed since the anchor of `place` (whoever pushed them, the Go proxy
        too), counted by the read script asked for none, on a connection of its own bounded by
        `timeout`: a close costs one round trip, and a frozen server holds it that long at most.
        With the anchor gone (trimmed, or Redis lost its data), the whole list. None if Redis
        does not answer."""
        behind = self._count_past(place, timeout, trimmed_too=False)
        return None if behind is None else behind[0]

    def behind_at_end(self, place: dict[str, Any], timeout: float) -> tuple[int, int] | None:
        """`unhanded()`, and with the anchor gone, the entries trimmed or expired past it before
        they were read: the oldest LogID the list holds (or, with the list empty, the counter)
        less the place's, one more round trip (trial 216: counted nowhere)."""
        return self._count_past(place, timeout, trimmed_too=True)

    def _count_past(
        self, place: dict[str, Any], timeout: float, *, trimmed_too: bool
    ) -> tuple[int, int] | None:
        args = _read_new_args(place, 0)
        last = int(place.get("position") or 0)
        connection = None
        try:
            connection = bounded_connection(self._client, timeout)
            connection.connect()
            connection.send_command("EVAL", LOG_READ_NEW, len(self._keys), *self._keys, *args)
            reply: Any = connection.read_response()
            seq, found = int(reply[0]), bool(int(reply[1]))
            length, lo = int(reply[3]), int(reply[4])
            if found:
                return lo, 0
            if not trimmed_too or seq < last:  # not asked, or not the same log any more
                return length, 0
            if not length:  # all gone (expired, trimmed to nothing): the counter says how many
                return 0, seq - last
            connection.send_command("LINDEX", self._keys[0], -1)
            oldest = leading_log_id(connection.read_response())
        except (redis.RedisError, OSError, TypeError, ValueError, IndexError):
            return None
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.disconnect()
        return length, (oldest - last - 1 if oldest and oldest > last + 1 else 0)

    def log_id_of(self, place: dict[str, Any]) -> int:
        return int(place.get("position") or 0)

    def read(self, cursor: Cursor, max_items: int) -> bool:
        """Hand the subscription the oldest entries pushed since its anchor; report gaps."""
        last = int(cursor.position)
        sub = cursor.sub
        anchor: bytes | str | None = cursor.extra.get("anchor")
        reply: Any = self._read_new(keys=self._keys, args=_read_new_args(cursor.extra, max_items))
        seq, found, items, length = int(reply[0]), bool(int(reply[1])), reply[2], int(reply[3])
        if not items:
            # Nothing new. An anchor that is gone with the list empty (expired, flushed) shows
            # as a gap, if there is one, once entries arrive.
            if found:
                cursor.extra["at"] = int(reply[4]) - length  # its place now: the bound tightens
            return False
        decoded: list[Event | None] = []
        for raw in reversed(items):
            try:
                decoded.append(Event.from_json(raw))
            except WireFormatError:
                decoded.append(None)
        with self.delivering:
            if self.ended or cursor.extra.get("removed"):
                return False
            # With no anchor yet (the list was empty so far), a few LogIDs below the oldest
            # may be Go writers' INCRs whose LPUSH is still to come, not a loss. More than
            # that many is a trim: by our own length, or by a writer that trims shorter (Go's
            # log mode, another process's EVENTBUS_REDIS_MAX_LEN), which went unreported.
            trimmed = (
                anchor is not None
                or not self._max_len
                or length >= self._max_len
                or (decoded[0] is not None and decoded[0].log_id - last - 1 > _IN_FLIGHT)
            )
            if not found and trimmed:
                last = self._check_gap(
                    sub, last, seq, had_anchor=anchor is not None, oldest=decoded[0]
                )
            events = [e for e in decoded if e is not None]
            bad = len(decoded) - len(events)
            if bad:
                first = decoded.index(None)
                before = [e.log_id for e in decoded[:first] if e is not None and e.log_id]
                after = before[-1] if before else last
                self.skip_undecodable(
                    sub, bad, f"after LogID {after}" if after else "before any event it read"
                )
            cursor.position = max([last, *(e.log_id for e in events)])
            cursor.extra["anchor"] = items[0]  # the newest entry read: new ones land above it
            # Where it is (from the head, less the length), and what lies below it: the next
            # read finds it there, not at an identical entry pushed since.
            cursor.extra["at"] = int(reply[4]) - length
            cursor.extra["below"] = list(reply[5])
            taken = self.offer(cursor, events)
            sub.last_log_id = max(sub.last_log_id, events[taken - 1].log_id if taken else 0)
        return True

    def _check_gap(
        self, sub: RedisSubscription, last: int, seq: int, *, had_anchor: bool, oldest: Event | None
    ) -> int:
        """The read starts at the list's tail (`oldest`): say whether events were missed since
        LogID `last`, and return the position to carry on from (0 once the log was replaced)."""
        if seq < last:
            # The counter went backwards: Redis lost its data (flush, failover, restart without
            # persistence). Carry on from the new counter's start: its events are all new.
            gap = Gap(last, None, f"LogID counter went back from {last} to {seq}")
            last = 0
        elif oldest is None or not oldest.log_id:
            if not had_anchor:
                return last  # no LogID to judge by (undecodable, or a writer that stamps none)
            # The entry read last is gone, and these carry no LogID to count by: what lay
            # between may be lost. Said, with the count unknown, rather than not at all.
            gap = Gap(
                last,
                None,
                "the entry read last left the log (trimmed or expired) before "
                "the next read; its entries carry no LogID to count what was missed",
            )
            sub.report_gap(gap, advice=self.trim_advice())
            self.gaps += 1
            return last
        elif had_anchor and oldest.log_id <= last:
            # The entry read last is gone, yet older LogIDs are there: this is not the log we
            # were reading (Redis restarted empty and was refilled past our position).
            gap = Gap(last, None, "the log was replaced (Redis lost its data)")
            last = 0
        elif oldest.log_id > last + 1:
            gap = Gap(last, oldest.log_id - last - 1, "trimmed from the log before it was read")
            sub.report_gap(gap, advice=self.trim_advice())
            self.gaps += 1
            return last
        else:
            return last
        sub.report_gap(gap)
        self.gaps += 1
        return last

    def trim_advice(self) -> str:
        # The writers' trim length, which may be shorter than this process's own setting.
        own = f", {self._max_len} here" if self._max_len else ""
        # Expiry too: a list that outlived an eventbus writer's EVENTBUS_REDIS_TTL goes whole,
        # the Go proxy's later events with it (trial 241 was told only of MAX_LEN).
        return (
            f"the log keeps the newest events only, as its writers trim it (EVENTBUS_REDIS_"
            f"MAX_LEN{own}; the Go proxy's own limit), and goes whole when it expires "
            f"(EVENTBUS_REDIS_TTL after an eventbus writer's last write, however much others "
            f"wrote since): raise them (TTL 0: no expiry), or read faster (a larger "
            f"subscription buffer does not help: the events were gone from Redis)"
        )
