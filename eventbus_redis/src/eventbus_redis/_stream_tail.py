"""`StreamTailer`: plain fan-out subscriptions on a Redis stream (no consumer group).

Every subscription receives every entry added after it subscribed, read with XREAD from its
own last entry id. The thread waits with XREAD BLOCK, which returns as soon as an entry lands
(on a connection of its own, which `stop()` cuts). Gaps (entries trimmed before they were read)
show as a jump in counter LogIDs, and are reported once the stream confirms it lost entries
after the subscription's position (the counter starting over is Redis having lost its data,
reported too): LogIDs that merely do not follow on (another writer's
counter) are not mistaken for losses, nor are the LogIDs derived for the Go proxy's LogID-0
entries (see `eventbus_redis._stream_entry`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

import redis

from eventbus_core import Event, WireFormatError
from eventbus_redis._client import socket_timeout
from eventbus_redis._config_errors import counter_value
from eventbus_redis._entries import entry_order, stream_entries, text
from eventbus_redis._own_connection import OwnConnection
from eventbus_redis._reachable import bounded_connection
from eventbus_redis._redis_subscription import Gap
from eventbus_redis._stream_entry import STREAM_LOG_ID_BASE, event_from_stream_entry
from eventbus_redis._tail import Cursor, Tailer

__all__ = ["StreamTailer"]


class StreamTailer(Tailer):
    """Moves new stream entries into subscriptions, in stream order.

    Args:
        client: The Redis client.
        stream: The stream key.
        poll: Longest single XREAD BLOCK (also how long `stop()` may wait on an idle stream).
        max_len: The approximate length writers trim the stream to (0: unknown), for warnings.
        on_undecodable: Called with the number of entries that did not decode.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        poll: float = 0.25,
        max_len: int = 0,
        on_undecodable: Callable[[int], None] | None = None,
        wrong_type: str = "",
    ) -> None:
        self._client = client
        self._stream = stream
        self._seq_key = f"{stream}:seq"
        self._waiter = OwnConnection(client)
        kept = f"about the newest {max_len}" if max_len else "a limited number of"
        self._trim_advice = (
            f"the stream keeps {kept} entries (EVENTBUS_REDIS_STREAM_MAX_LEN, or max_len of the "
            "writers): raise it, or read faster"
        )
        sock = socket_timeout(client)
        if sock is not None:
            poll = min(poll, max(sock - 1.0, 0.01))
        super().__init__(
            name=f"eventbus-redis-stream-tail[{stream}]",
            poll=poll,
            wrong_type=wrong_type,
            on_undecodable=on_undecodable,
        )

    def now(self) -> tuple[str, dict[str, Any]]:
        """Where a new subscriber starts: after the newest entry ("0-0" for an empty stream),
        with the LogID counter, read in one transaction, as its LogID position. Our writers add
        entries and move the counter atomically, so the events before it are neither delivered,
        nor waited for at `stop()`, nor taken for a gap."""
        pipe = self._client.pipeline(transaction=True)
        pipe.xrevrange(self._stream, count=1)
        pipe.get(self._seq_key)
        # How many entries the stream had had added then (Redis 7): what was added past the
        # subscription is counted from it at its end, without reading the entries. XINFO, a
        # read as XREVRANGE is (a script would need a user allowed to run one, as a reader
        # need not be); it fails on a stream not made yet (0 added).
        pipe.xinfo_stream(self._stream)
        newest, seq, info = pipe.execute(raise_on_error=False)
        for result in (newest, seq):
            if isinstance(result, Exception):
                raise result
        log_id = counter_value(seq, self._seq_key, "EVENTBUS_REDIS_STREAM")
        extra = {"log_id": log_id, "added": _entries_added(info), "passed": 0}
        return (text(newest[0][0]) if newest else "0-0"), extra

    counts_unhanded = True

    def behind_at_end(self, place: dict[str, Any], timeout: float) -> tuple[int, int] | None:
        """`(held, trimmed)` past the place: the entries added since the subscription began
        (Redis 7's `entries-added`, then and now) less those it read, all in O(1) on the
        server, on a connection of its own bounded by `timeout`. Those the stream still holds
        (all of them while the entry read last is there; else as many as it holds, trimming
        taking the oldest first) are `held`, the rest were trimmed (or deleted) before it read
        them. None where it cannot be told: Redis does not answer, keeps no `entries-added`
        (before 7.0), or lost its data meanwhile (the count went back)."""
        position = str(place["position"])
        connection = None
        try:
            connection = bounded_connection(self._client, timeout)
            connection.connect()
            connection.send_command("XINFO", "STREAM", self._stream)
            try:
                info: Any = _as_fields(connection.read_response())
            except redis.ResponseError:  # no stream (yet): nothing was added
                info = {"entries-added": 0, "length": 0}
            kept = False
            if position != "0-0":
                connection.send_command("XRANGE", self._stream, position, position)
                kept = bool(connection.read_response())
            added, length = _entries_added(info), int(info.get("length", 0))
            began = place.get("added")
            if added is None or began is None:
                return None
            past = added - began - int(place.get("passed", 0))
            if past < 0 or place.get("reset"):
                # Redis lost its data meanwhile: the stream's count of entries added began
                # again, and entries without a counter's LogID (the Go proxy's) read before the
                # reset showed were in neither count: 7 delivered were counted dropped, and a
                # stream of Go entries alone went "uncounted" (trial 259). Counted directly.
                after = _count_after(connection, self._stream, position)
                return None if after is None else (after, 0)
        except (redis.RedisError, OSError, TypeError, ValueError, KeyError, IndexError):
            return None
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.disconnect()
        held = past if kept else min(past, length)
        return held, past - held

    def log_id_of(self, place: dict[str, Any]) -> int:
        return int(place.get("log_id") or 0)

    def trim_advice(self) -> str:
        return self._trim_advice

    def read(self, cursor: Cursor, max_items: int) -> bool:
        """Hand the subscription the entries after its position; report LogID jumps as gaps."""
        entries = stream_entries(
            self._client.xread({self._stream: cursor.position}, count=max_items)
        )
        if not entries:
            return False
        decoded: list[tuple[str, Event | None]] = []
        for entry_id, fields in entries:
            try:
                decoded.append((text(entry_id), event_from_stream_entry(entry_id, fields)))
            except WireFormatError:
                decoded.append((text(entry_id), None))
        # Judge gaps first (that may ask Redis), then hand over under the lock, without I/O.
        events: list[Event] = []
        gaps: list[Gap] = []
        resets: list[Gap] = []
        last_log = int(cursor.extra.get("log_id", 0))
        last_log_entry = str(cursor.extra.get("log_entry", cursor.position))
        reset_at: int | None = None  # where in `decoded` a stream Redis lost begins again
        for index, (entry_id, event) in enumerate(decoded):
            if event is None:
                continue
            if event.log_id and event.log_id < STREAM_LOG_ID_BASE:  # a counter's LogID
                if (
                    last_log
                    and event.log_id <= last_log
                    and self._counter_restarted(event.log_id, last_log, last_log_entry)
                ):
                    # Redis lost its data (restart without persistence, flush, failover). Said,
                    # as the list backend says it, and counted from the new counter (trial 147).
                    resets.append(
                        Gap(
                            last_log,
                            None,
                            f"LogID counter went back from {last_log} to {event.log_id} (Redis "
                            "lost its data)",
                        )
                    )
                    last_log, last_log_entry = event.log_id, entry_id
                    reset_at = index
                    events.append(event)
                    continue
                # From a counter of 0 too (an empty stream at subscribe): entries trimmed
                # before the first read were counted nowhere (trial 216, on fakeredis's exact
                # trimming). LogIDs of another counter (Go's samples) are no gap: from 0, only
                # a LogID this stream's counter reached is counted by.
                if (
                    event.log_id > last_log + 1
                    and (last_log or self._counter_reached(event.log_id))
                    and self._lost_after(last_log_entry)
                ):
                    gaps.append(
                        Gap(
                            last_log,
                            event.log_id - last_log - 1,
                            "LogIDs jumped (stream trimmed or entries deleted before it read them)",
                        )
                    )
                if event.log_id > last_log:
                    last_log, last_log_entry = event.log_id, entry_id
            events.append(event)
        with self.delivering:
            if self.ended or cursor.extra.get("removed"):
                # Closed meanwhile: its close counts what lies past its place, these included
                # (review 220: handed over too, they were counted twice, as the list's were in
                # review 181).
                return False
            for gap in gaps:
                cursor.sub.report_gap(gap, advice=self._trim_advice)
                # Counted here: passed over, not to be counted again at the end.
                cursor.extra["passed"] = int(cursor.extra.get("passed", 0)) + (gap.missed or 0)
            for gap in resets:
                cursor.sub.report_gap(gap)
            self.gaps += len(gaps) + len(resets)
            cursor.position = decoded[-1][0]
            if reset_at is None:
                cursor.extra["passed"] = int(cursor.extra.get("passed", 0)) + len(decoded)
            else:  # a new stream: its count of entries added began with it
                cursor.extra["added"], cursor.extra["passed"] = 0, len(decoded) - reset_at
                cursor.extra["reset"] = True  # and which entries came before it, none tells
            cursor.extra["log_id"] = last_log
            cursor.extra["log_entry"] = last_log_entry
            bad = len(decoded) - len(events)
            if bad:
                first = next(entry_id for entry_id, event in decoded if event is None)
                self.skip_undecodable(cursor.sub, bad, f"from entry {first}")
            if events:
                self.offer(cursor, events)
                cursor.sub.last_log_id = last_log
        return True

    def _counter_restarted(self, log_id: int, last_log: int, last_log_entry: str) -> bool:
        """True if a LogID at or below the last one read means that this stream's counter
        started over: the entry read last is gone, and the counter is below the last LogID
        read or (events past it published since) this is LogID 1. LogIDs stamped by another
        writer with a counter of its own are none, trimmed or not (review 149)."""
        if not self._lost_after(last_log_entry):
            return False
        if log_id == 1:
            return True
        seq = self._client.get(self._seq_key)
        return counter_value(seq, self._seq_key, "EVENTBUS_REDIS_STREAM") < last_log

    def _counter_reached(self, log_id: int) -> bool:
        """Whether this stream's LogID counter is at `log_id` or past it (the LogID is ours)."""
        seq = self._client.get(self._seq_key)
        return counter_value(seq, self._seq_key, "EVENTBUS_REDIS_STREAM") >= log_id

    def _lost_after(self, entry_id: str) -> bool:
        """True if entries newer than `entry_id` (read already) may have been trimmed or
        deleted. Trimming takes the oldest first, so while that entry is still in the stream
        nothing after it was trimmed; only XDEL could have removed some (Redis 7 reports the
        newest deleted id)."""
        if not self._client.xrange(self._stream, min=entry_id, max=entry_id, count=1):
            return True
        info = self._client.xinfo_stream(self._stream)
        deleted = text(info.get("max-deleted-entry-id") or "0-0")
        return entry_order(deleted) > entry_order(entry_id)

    def wait(self, timeout: float) -> None:
        """Block until an entry newer than the furthest subscription's position lands.

        The blocking XREAD goes on a connection of this thread's own, which `stop()` cuts
        (`interrupt()`), so stopping never waits for it."""
        positions = [c.position for c in self._cursors if c.position is not None]
        if not positions:
            super().wait(timeout)
            return
        newest = max(positions, key=entry_order)
        block = max(1, int(timeout * 1000))
        self._waiter.call(("XREAD", "COUNT", 1, "BLOCK", block, "STREAMS", self._stream, newest))

    def interrupt(self) -> None:
        """Cut the waiting connection from another thread (no network I/O)."""
        self._waiter.cut()

    def reset_connection(self) -> None:
        """Drop the waiting connection after an error (or at the end)."""
        self._waiter.reset()

    def forget_connection(self) -> None:
        """In a forked child: the waiting connection is the parent's; leave it alone."""
        self._waiter.forget()


def _as_fields(reply: Any) -> dict[str, Any]:
    """XINFO STREAM's reply as a mapping with `str` names (RESP2's flat list, or RESP3's map)."""
    if isinstance(reply, dict):
        return {text(k): v for k, v in reply.items()}
    return {text(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


_COUNT_AFTER_MAX: Final = 10_000
"""Entries `_count_after` reads at most: a subscription that far behind stays uncounted."""


def _count_after(connection: Any, stream: str, position: str) -> int | None:
    """How many entries `stream` holds after `position` (None past `_COUNT_AFTER_MAX`), read
    with XRANGE on `connection` (Redis 6.2's exclusive start)."""
    connection.send_command("XRANGE", stream, f"({position}", "+", "COUNT", _COUNT_AFTER_MAX + 1)
    entries = connection.read_response() or []
    return None if len(entries) > _COUNT_AFTER_MAX else len(entries)


def _entries_added(info: Any) -> int | None:
    """`entries-added` of an XINFO STREAM reply (parsed or raw): 0 where the stream did not
    exist (an error in its place), None where Redis keeps no such count (before 7.0)."""
    if isinstance(info, Exception):
        return 0 if "no such key" in str(info).lower() else None
    fields = _as_fields(info) if isinstance(info, list | dict) else {}
    added = fields.get("entries-added")
    return None if added is None else int(added)
