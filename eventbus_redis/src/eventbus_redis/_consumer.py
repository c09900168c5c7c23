"""`StreamConsumer`: at-least-once reading of a Redis stream through a consumer group.

An entry is acknowledged only when the caller says it has processed it (`ack()`), never when it
is handed over: a consumer that dies between `read()` and `ack()` leaves its entries pending,
and they are delivered again, to itself when it restarts under the same name (it re-reads its
own pending entries first) or to a peer, whose reads reclaim entries idle for `claim_idle`
seconds (XAUTOCLAIM) on a schedule, also while new entries keep coming.

Entries that do not decode, and entries delivered more than `max_deliveries` times, are moved to
the dead-letter stream with the reason (XADD and XACK in one transaction), never dropped.

`read_ahead()` (the `ReadAhead` capability, used by the dispatcher's inline batches) asks Redis
for the next batch of new entries before the caller works on the one it has: Redis prepares
that reply meanwhile, and the next `read()` returns it at once. From the request on, those
entries are pending under this consumer (`backlog()` counts them), `keep_alive()` refreshes
them, and `close()` gives back any it never returned (their idle time set to `claim_idle`, so
the next claim of any consumer of the group takes them at once). `read()` alone never reads
ahead.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Sequence
from typing import Any

import redis

from eventbus_core import (
    Delivery,
    WireFormatError,
    check_count,
    check_positive_seconds,
    check_seconds,
    get_logger,
)
from eventbus_core.batching import SaidEvery
from eventbus_core.capabilities import ParentsDeliveries, foreign_tokens, split_tokens
from eventbus_redis._client import TRANSIENT_ERRORS, Backoff, safe_error, socket_timeout
from eventbus_redis._config_errors import reporting_wrong_type
from eventbus_redis._entries import (
    DeadEntry,
    dead_letter,
    entry_data,
    entry_order,
    fields_as_json,
    raw_stream_entries,
    stream_entries,
    text,
)
from eventbus_redis._group_lag import group_lag
from eventbus_redis._own_connection import OwnConnection, send_all
from eventbus_redis._scripts import (
    STREAM_COUNT_UNREAD_TRIMMED,
    STREAM_CREATE_GROUP,
    STREAM_RECLAIM,
    STREAM_RELEASE,
)
from eventbus_redis._stream_entry import event_from_entry_data

__all__ = ["StreamConsumer"]

log = get_logger("eventbus.redis")

_MAX_DEFERRED_ACKS = 100_000
_SAY_TRIMMED_EVERY = 10.0  # seconds between warnings of entries trimmed (before read, or pending)
_ENTRY_ID = re.compile(r"[0-9]+(?:-[0-9]+)?")


def _is_entry_id(token: str) -> bool:
    return _ENTRY_ID.fullmatch(token) is not None


# After a failed read, how long until this consumer's own pending entries are read once more.
# A read whose connection timed out on a frozen server runs when the server resumes, maybe
# after the first re-read that followed the failure; its entries, pending under this consumer,
# are then found by the second instead of by a claim `claim_idle` later (an outside trial).
RECHECK_OWN_PENDING_AFTER = 2.0


def _is_nogroup(exc: redis.ResponseError) -> bool:
    # Anywhere in the text: Redis 6 words a script's error "ERR Error running script (call to
    # f_...): @user_script:...: NOGROUP ..." (review 227), Redis 7 passes it on as it is.
    return "NOGROUP" in str(exc)


def _is_out_of_memory(exc: redis.ResponseError) -> bool:
    """Redis at `maxmemory` with `noeviction` refuses a script that may write (the group's
    creation, the counting): an outage of the server's, retried, not the caller's to catch
    (the first read raised OutOfMemoryError, trial 193)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM")


def _script_refused(exc: BaseException) -> bool:
    """Whether Redis refused to run a script of ours at all (an ACL without EVAL, or without a
    command it calls), rather than the script meeting a state it reports (NOGROUP, ...)."""
    text = str(exc).lower()
    # Redis 7 words a command an ACL refuses inside a script "The user executing the script
    # can't run this command or subcommand" (trial 173).
    return isinstance(exc, redis.exceptions.NoPermissionError) or any(
        marker in text
        for marker in ("noperm", "noscript", "unknown command", "can't run this command")
    )


def default_consumer_name() -> str:
    """`host-pid`: unique per process. Pass a stable name to re-read your pending on restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamConsumer:
    """One consumer of a consumer group; an `AckableSource` for the dispatcher.

    Built by `RedisStreamsEventBus.consumer()`. Methods block and are meant for one thread.

    Attributes:
        name: The consumer's name within the group.
        group: The consumer group.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        name: str | None,
        *,
        batch_size: int = 100,
        block: float = 5.0,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
        dead_letter_stream: str,
        dead_letter_max_len: int = 10_000,
        claim_interval: float | None = None,
        stream_setting: str,
    ) -> None:
        # Whole counts and finite seconds: NaN passed `< 1` and `< 0`, and turned dead-lettering
        # off or made reads wait without end (trials 147, 150).
        check_count("batch_size", batch_size, 1)
        check_count("max_deliveries", max_deliveries, 1)
        check_seconds("block", block)
        check_seconds("claim_idle", claim_idle)
        if claim_interval is not None:  # 0 claimed at every read
            check_positive_seconds("claim_interval", claim_interval)
        self._client = client
        self.stream = stream
        self.group = group
        self._named_after_pid = name is None
        self.name = name or default_consumer_name()
        self.batch_size = batch_size
        self.block = block
        self.claim_idle = claim_idle
        self.max_deliveries = max_deliveries
        self.dead_letter_stream = dead_letter_stream
        self._dead_letter_max_len = dead_letter_max_len
        # Look for abandoned entries twice per idle period, whatever the traffic.
        self._claim_interval = claim_interval if claim_interval is not None else claim_idle / 2
        sock = socket_timeout(client)
        self._block_cap = max(0.0, sock - 1.0) if sock else None  # a block must not hit it
        self._group_ready = False
        self._backlog_from: str | None = "0"  # own pending entries are read first
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_refresh = 0.0
        self._deferred_acks: list[str] = []
        self.acks_unsent = 0  # acknowledgements Redis never took before close()
        # Of those, the ones whose XACK was sent without its reply coming back (see _flush_acks).
        self._maybe_acked: set[str] = set()
        # Reads of new entries and acknowledgements, the calls of every batch, go through a
        # connection of the consumer's own, whose replies are read as they come: redis-py's
        # pool and reply callbacks (a connection checked out and back, each entry's fields made
        # a dict) cost about 1 µs of a chat event's 35 in `bench_dispatch.py`.
        self._conn = OwnConnection(client)
        # A read of new entries (the counting script, then XREADGROUP) sent on it by
        # read_ahead() and not yet read (its COUNT; None: none),
        # and entries read so (or more than a read asked for) not yet returned by read().
        # Every other use of the connection reads that reply first (`_call`).
        self._ahead: int | None = None
        self._surplus: list[Any] = []
        self._recheck_own_at: float | None = None  # see RECHECK_OWN_PENDING_AFTER
        # Handed over and not yet acknowledged (an ordered set): what keep_alive() refreshes.
        self._in_flight: dict[str, None] = {}
        self._parents = ParentsDeliveries()  # out when this process was forked: not its own
        self._backoff = Backoff()
        self._closed = False
        self.delivered = 0
        self.acked = 0
        # In a forked child: deliveries the parent made and had not had acknowledged (they
        # stay the parent's), so that delivered - acked - left_to_parent is the child's own.
        self.left_to_parent = 0
        self.ack_unheld = 0  # acknowledgements of entries Redis no longer held as pending
        self.claimed = 0
        self.dead_lettered = 0
        self.trimmed = 0
        # Entries trimmed before the group was handed them (counted once per group: by the
        # consumer whose read found them).
        self.trimmed_unread = 0
        # Off once Redis refuses a script of ours (an ACL): plain commands then, uncounted.
        self._scripts_allowed = True
        self._trimmed_unread_said = SaidEvery(self._say_trimmed_unread, _SAY_TRIMMED_EVERY)
        self._trimmed_pending_said = SaidEvery(self._say_trimmed_pending, _SAY_TRIMMED_EVERY)
        self._sent = 1  # commands of the last read of new entries (its replies to read)
        self.groups_created = 0
        # Times the group was gone once it had been there (Redis restarted without
        # persistence, or flushed): what was written and not yet read may be lost, how much
        # cannot be told. It was re-created with an INFO line only (trial 193).
        self.missed_unknown = 0
        self._had_group = False
        self._newest_read: Any = None  # id of the newest entry read as new
        self.last_error: str | None = None
        self._stream_setting = stream_setting

    # ------------------------------------------------------------------------------ reading

    def read(self, max_items: int, timeout: float) -> list[Delivery]:
        """Return up to `max_items` (at most `batch_size`) deliveries, waiting up to `timeout`
        seconds for the first.

        Order of sources: this consumer's own pending entries (after a restart), then entries
        reclaimed from dead peers (when the claim schedule is due), then new entries. Returns
        [] on timeout, and also while Redis is unreachable (after waiting with backoff).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        count = max(1, min(max_items, self.batch_size))
        # What a period held back is said once it is over, not at the next loss or close
        # (a running dispatcher may go days without either: review 252).
        self._trimmed_unread_said.add(0)
        self._trimmed_pending_said.add(0)
        while not self._closed:
            try:
                # A stream key that holds another type of value is the settings' fault, not an
                # outage: said once, naming the setting, instead of retried for ever.
                with reporting_wrong_type(self._client, [self.stream], self._stream_setting):
                    out = self._read_once(count, deadline)
            except (redis.ResponseError, *TRANSIENT_ERRORS) as exc:
                if isinstance(exc, redis.ResponseError) and _is_nogroup(exc):
                    self._recreate_group()
                    continue
                if isinstance(exc, redis.ResponseError) and not _is_out_of_memory(exc):
                    raise
                # Unreachable, slow, or full (maxmemory): retried with backoff.
                self._note_error(exc)
                # A reply lost on the way (a cut connection, a server paused past the socket's
                # timeout) may have held entries Redis now counts as this consumer's: read its
                # own pending entries again first, rather than leave them to a claim
                # `claim_idle` later (an outside trial saw a batch wait 30 s so).
                self._backlog_from = "0"
                self._recheck_own_at = time.monotonic() + RECHECK_OWN_PENDING_AFTER
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                time.sleep(min(self._backoff.next(), remaining))
                continue
            self._backoff.reset()
            if out or time.monotonic() >= deadline:
                return out
        return []

    def _read_once(self, count: int, deadline: float) -> list[Delivery]:
        self._ensure_group()
        if self._deferred_acks:
            self._flush_acks()
        if self._ahead is not None:
            self._take_ahead()
        if self._surplus:
            items, self._surplus = self._surplus[:count], self._surplus[count:]
            return self._process(items, history=False)
        if self._recheck_own_at is not None and time.monotonic() >= self._recheck_own_at:
            self._recheck_own_at = None
            self._backlog_from = "0"  # once more: see RECHECK_OWN_PENDING_AFTER
        if self._backlog_from is not None:
            items = stream_entries(
                self._client.xreadgroup(
                    self.group, self.name, {self.stream: self._backlog_from}, count=count
                )
            )
            if items:
                self._backlog_from = text(items[-1][0])
                # What is still with the caller, or acknowledged and not yet confirmed, is not
                # handed over again: only entries Redis gave this consumer that never reached
                # the caller (after a restart: all of them).
                held = self._in_flight.keys() | self._deferred_acks
                items = [item for item in items if text(item[0]) not in held]
                return self._process(items, history=True) if items else []
            self._backlog_from = None
        now = time.monotonic()
        if now >= self._next_claim:
            reply = self._reclaim(count)
            self._claim_cursor = text(reply[0])
            if self._claim_cursor == "0-0":
                self._next_claim = now + self._claim_interval
            if reply[2]:
                # A dead consumer's, gone from the stream: lost (a live one's are left to it:
                # trial 168 saw 885 counted lost of 985, 100 held by the caller and delivered).
                self._lost_to_trim(int(reply[2]))
            if reply[1]:
                self.claimed += len(reply[1])
                return self._process(reply[1], history=True)
        wait = deadline - time.monotonic()
        wait = min(wait, self.block, self._block_cap if self._block_cap is not None else wait)
        items = self._read_new(count, int(wait * 1000))
        return self._process(items, history=False) if items else []

    def _reclaim(self, count: int) -> Any:
        """`[next start, claimed entries, gone]` of the reclaim script (see STREAM_RECLAIM);
        with a Redis user that may not run it, of a plain XAUTOCLAIM, which counts nothing:
        what it drops from the pending list may be a live consumer's (processed)."""
        idle_ms = int(self.claim_idle * 1000)
        if self._scripts_allowed:
            try:
                return self._client.eval(
                    STREAM_RECLAIM,
                    1,
                    self.stream,
                    self.group,
                    self.name,
                    idle_ms,
                    self._claim_cursor,
                    count,
                )
            except redis.ResponseError as exc:
                if not _script_refused(exc):
                    raise
                self._refuse_scripts(exc)
        start = self._claim_cursor.lstrip("(") if self._claim_cursor != "0-0" else "0-0"
        reply: Any = self._client.xautoclaim(
            self.stream, self.group, self.name, idle_ms, start_id=start, count=count
        )
        return [reply[0], reply[1], 0]

    def _read_new(self, count: int, block_ms: int) -> list[Any]:
        """Up to `count` new entries, waiting up to `block_ms` for the first (0: not at all)."""
        try:
            send_all(self._conn.get(), self._read_new_commands(count, block_ms))
        except BaseException:
            self._conn.reset()  # what reached Redis is unknown: the connection goes
            raise
        return self._new_entries()

    def _read_new_commands(self, count: int, block_ms: int = 0) -> list[tuple[Any, ...]]:
        """XREADGROUP of up to `count` new entries, waiting up to `block_ms` (0: not at all),
        after the script that counts the entries trimmed before the group read them: one round
        trip. (Not one script: that would copy every entry of the batch through Lua and back,
        eight times Redis's work for a batch of chat events.)"""
        block: tuple[Any, ...] = ("BLOCK", block_ms) if block_ms >= 1 else ()
        group = ("GROUP", self.group, self.name)
        commands: list[tuple[Any, ...]] = []
        if self._scripts_allowed:
            commands.append(("EVAL", STREAM_COUNT_UNREAD_TRIMMED, 1, self.stream, self.group))
        commands.append(("XREADGROUP", *group, "COUNT", count, *block, "STREAMS", self.stream, ">"))
        self._sent = len(commands)
        return commands

    def _new_entries(self) -> list[Any]:
        """The entries of the read `_read_new_commands` sent, after counting the ones the
        script says the group never got.

        Raises:
            redis.RedisError, OSError: as a read does. (Redis refusing the counting script,
                an ACL without XINFO, say, only turns the counting off, with a warning.)
        """
        replies = self._conn.read(self._sent, raise_errors=False)
        if self._sent == 2:
            self._take_count(replies[0])
        read = replies[-1]
        if isinstance(read, Exception):
            raise read
        return raw_stream_entries(read)

    def _take_count(self, reply: Any) -> None:
        """The counting script's reply: what the group lost to trimming, or why it cannot tell."""
        if isinstance(reply, Exception):
            if _script_refused(reply):
                self._refuse_scripts(reply)
            # else the read beside it says what is wrong (WRONGTYPE, ...): counted next time
        elif reply:
            self._lost_before_read(int(reply))

    def _refuse_scripts(self, exc: BaseException) -> None:
        """Redis refused a script of ours: plain commands from now on, said once."""
        if not self._scripts_allowed:
            return
        self._scripts_allowed = False
        log.warning(
            "eventbus redis: consumer %s cannot run its scripts on %s (%s): it reads and "
            "reclaims with plain commands, and entries trimmed before its group read them, or "
            "while a dead consumer held them, go uncounted from now on",
            self.name,
            self.stream,
            safe_error(exc),
        )

    def read_ahead(self, max_items: int) -> None:
        """Ask Redis now for up to `max_items` new entries (at most `batch_size`), for the
        next `read()` to return (see the module docstring). Does nothing while this consumer
        reads its own pending entries or a reclaim is due, or when one is already asked for;
        never raises (if the request fails, the next read reads as usual)."""
        count = max(1, min(max_items, self.batch_size))
        if (
            self._closed
            or self._ahead is not None
            or self._surplus
            or self._backlog_from is not None
            or not self._group_ready
            or time.monotonic() >= self._next_claim
        ):
            return
        try:
            send_all(self._conn.get(), self._read_new_commands(count))
        except TRANSIENT_ERRORS:
            # Redis may have taken it: then its entries are pending under this consumer, and
            # its claims take them back once they are `claim_idle` old.
            self._conn.reset()
            return
        self._ahead = count

    def _take_ahead(self) -> None:
        """Read the replies of the read `read_ahead()` sent, its entries into `_surplus`.

        Raises:
            redis.RedisError, OSError: as a read does. After a lost connection the entries of
                that reply, if Redis sent one, are pending under this consumer: its claims take
                them back once they are `claim_idle` old.
        """
        self._ahead = None
        self._surplus += self._new_entries()

    def _call(self, command: tuple[Any, ...]) -> Any:
        """One command on the consumer's own connection, after the reply read ahead, if one
        is on its way there."""
        if self._ahead is not None:
            self._take_ahead()
        return self._conn.call(command)

    def _process(self, items: list[Any], *, history: bool) -> list[Delivery]:
        if not history:
            self._newest_read = items[-1][0]  # see _group_lost_entries
        attempts: dict[str, int] = {}
        if history:
            ids = [text(i) for i, _ in items]
            for row in self._client.xpending_range(
                self.stream,
                self.group,
                min=ids[0],
                max=ids[-1],
                count=len(ids) + 16,
                consumername=self.name,
            ):
                attempts[text(row["message_id"])] = int(row["times_delivered"])
        out: list[Delivery] = []
        dead: list[DeadEntry] = []
        trimmed: list[str] = []
        for raw_id, fields in items:
            entry_id = text(raw_id)
            if not fields:  # deleted from the stream (trimmed) while it was pending
                trimmed.append(entry_id)
                continue
            n = attempts.get(entry_id, 1)
            data = entry_data(fields)
            if data is None:
                # Its own fields go in the dead letter's data: it was dead-lettered empty, and
                # its content was gone once the stream was trimmed (trial 154).
                reason = "entry has no 'data' field (its fields are in data, as a JSON object)"
                dead.append((entry_id, fields_as_json(fields), reason, n))
            elif n > self.max_deliveries:
                dead.append(
                    (
                        entry_id,
                        data,
                        f"delivered {n} times (max_deliveries={self.max_deliveries})",
                        n,
                    )
                )
            else:
                try:
                    event = event_from_entry_data(entry_id, data)
                except WireFormatError as exc:
                    dead.append((entry_id, data, f"undecodable: {exc}", n))
                else:
                    out.append(Delivery(event, token=entry_id, attempts=n))
        if trimmed:
            self._client.xack(self.stream, self.group, *trimmed)
            self._lost_to_trim(len(trimmed))
        if dead:
            self._dead_letter(dead)
        self.delivered += len(out)
        self._in_flight.update(dict.fromkeys(d.token for d in out))
        for delivery in out:  # claimed from the parent, say: this process's own now
            self._parents.discard(delivery.token)
        return out

    def _refresh_in_flight(self, now: float) -> None:
        """Reset the idle time of entries handed over and not yet acknowledged (XCLAIM ...
        JUSTID to ourselves resets it without counting a delivery)."""
        self._next_refresh = now + self._claim_interval
        if self._ahead is not None:
            self._take_ahead()  # its entries age too: refreshed with the others
        ids = [*self._in_flight, *(text(entry_id) for entry_id, _ in self._surplus)]
        self._claim_to_self(ids)

    def _claim_to_self(self, ids: list[str], *, idle_ms: int | None = None) -> None:
        """XCLAIM `ids` to this consumer with JUSTID (no delivery counted), 1,000 at a time:
        their idle time restarts at 0, or is set to `idle_ms`."""
        claimed: list[int | bytes | str | memoryview] = list(ids)
        for i in range(0, len(claimed), 1000):
            self._client.xclaim(
                self.stream,
                self.group,
                self.name,
                0,
                claimed[i : i + 1000],
                idle=idle_ms,
                justid=True,
            )

    def keep_alive(self) -> None:
        """Tell the group that what this consumer holds is still being processed.

        Call it between reads (the dispatcher does, also while its sinks are too busy for it
        to read): entries held longer than `claim_idle` would otherwise look abandoned, and
        the reclaim of a read (this consumer's or a peer's) would deliver them a second time
        while they are still being worked on. A consumer that never calls it gets entries it
        leaves unacknowledged back after `claim_idle`. Cheap when not due (every
        `claim_interval`); never raises for Redis trouble (the next read reports it).
        """
        now = time.monotonic()
        held = self._in_flight or self._surplus or self._ahead is not None
        if not held or now < self._next_refresh or self._closed:
            return
        try:
            self._refresh_in_flight(now)
        except (*TRANSIENT_ERRORS, redis.ResponseError) as exc:
            self._note_error(exc)

    def _dead_letter(self, dead: list[DeadEntry]) -> None:
        dead_letter(
            self._client,
            self.stream,
            self.group,
            self.name,
            self.dead_letter_stream,
            self._dead_letter_max_len,
            dead,
        )
        self.dead_lettered += len(dead)

    def _lost_before_read(self, n: int) -> None:
        self.trimmed_unread += n
        self._trimmed_unread_said.add(n)  # at most every _SAY_TRIMMED_EVERY s, the rest at close

    def _say_trimmed_unread(self, n: int, total: int) -> None:
        log.warning(
            "eventbus redis: %d %s of %s %s trimmed (MAXLEN) before consumer group %s read "
            "%s: raise EVENTBUS_REDIS_STREAM_MAX_LEN (of every writer) or read faster "
            "(%d in all, counted in missed)",
            n,
            "entry" if n == 1 else "entries",
            self.stream,
            "was" if n == 1 else "were",
            self.group,
            "it" if n == 1 else "them",
            total,
        )

    def _lost_to_trim(self, n: int) -> None:
        self.trimmed += n
        self._trimmed_pending_said.add(n)  # at most every _SAY_TRIMMED_EVERY s, the rest at close

    def _say_trimmed_pending(self, n: int, total: int) -> None:
        log.warning(
            "eventbus redis: %d pending %s of %s %s trimmed (MAXLEN) or deleted before %s "
            "acknowledged: a consumer that died held %s, and whether its sinks got %s before it "
            "died is unknown (%d in all, counted in missed)",
            n,
            "entry" if n == 1 else "entries",
            self.stream,
            "was" if n == 1 else "were",
            "it was" if n == 1 else "they were",
            "it" if n == 1 else "them",
            "it" if n == 1 else "them",
            total,
        )

    # ------------------------------------------------------------------------ group upkeep

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # Start at "0": a group created after proxies began publishing still gets what
            # the stream holds, rather than only what comes after the first dispatcher.
            try:
                self._client.eval(STREAM_CREATE_GROUP, 1, self.stream, self.group)
            except redis.ResponseError as exc:
                if not _script_refused(exc):
                    raise
                # A user without EVAL or XINFO: the group, without the read counter set past
                # what was trimmed before it (trial 171: such a user could not read at all).
                self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            self.groups_created += 1
            if self._had_group:
                self._group_gone(self._group_lost_entries(), "is re-created")
            else:
                log.info("eventbus redis: created consumer group %s on %s", self.group, self.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                pass
            elif _is_out_of_memory(exc) and self._group_exists():
                pass  # a full Redis refuses the creation script even for a group it has
            else:
                raise
        self._group_ready = self._had_group = True

    def _group_lost_entries(self, newest: str | None = None) -> bool:
        """Whether the stream no longer holds `newest` (by default the newest entry this
        consumer read): with the group gone, Redis lost its data (a restart without
        persistence, a flush), and what was written after that entry and not yet read went
        with it. Held: the group alone was deleted, and nothing is lost (its entries come
        again). None read yet: cannot tell; counted, as a loss unsaid is worse than one said
        in doubt."""
        newest = newest or self._newest_read
        if newest is None:
            return True
        return not self._client.xrange(self.stream, newest, newest)

    def _group_gone(self, lost: bool, then: str) -> None:
        """Say that the group was found gone (`then`: what happens now), and count it in
        `missed_unknown` when Redis `lost` its data with it: the one place that decides how
        a group found gone is reported, by a read or by a hand-back."""
        if not lost:
            # Deleted by hand (XGROUP DESTROY), the stream kept: read again from its start.
            log.warning(
                "eventbus redis: consumer group %s of %s was gone (deleted?) and %s: the "
                "entries the stream holds are delivered again",
                self.group,
                self.stream,
                then,
            )
            return
        self.missed_unknown += 1
        log.warning(
            "eventbus redis: consumer group %s of %s was gone, and so was the newest entry it "
            "had read (Redis restarted without persistence, or was flushed?), and %s: entries "
            "written before and not yet read by it may be lost, how many cannot be told",
            self.group,
            self.stream,
            then,
        )

    def _group_exists(self) -> bool:
        """Whether the stream has this consumer's group (a read: Redis answers it when full)."""
        try:
            groups = self._client.xinfo_groups(self.stream)
        except redis.ResponseError:
            return False  # no such stream
        return any(text(g.get("name")) == self.group for g in groups)

    def _recreate_group(self) -> None:
        """Redis answered NOGROUP: forget what went with the group, and create it again
        (`_ensure_group` says so and counts it)."""
        self._group_ready = False
        self._backlog_from = None  # its pending entries went with it
        self._claim_cursor = "0-0"
        self.ack_unheld += len(self._deferred_acks)  # nothing left to acknowledge them in
        self._deferred_acks.clear()
        self._maybe_acked.clear()
        self._in_flight.clear()
        self._conn.reset()  # a reply read ahead went with the group
        self._ahead = None
        self._surplus = []
        # Created by the next read, whose errors (an outage, a full Redis) are handled there:
        # made here, in read()'s handler, they escaped it (review 196).

    def _note_error(self, exc: BaseException, doing: str = "read") -> None:
        """Keep `exc` in `last_error`, and say it when it is new; `doing` names what failed
        (an acknowledgement was said as "cannot read", trial 230)."""
        if isinstance(exc, redis.ResponseError) and _is_out_of_memory(exc):
            # redis-py quotes a failed pipeline command with its arguments (a dead letter's
            # XADD: entry data), which the log must not show.
            message = "OutOfMemoryError: Redis refuses writes at its maxmemory (noeviction)"
        else:
            message = safe_error(exc)
        if message != self.last_error:
            log.warning(
                "eventbus redis consumer %s cannot %s (%s); retrying", self.name, doing, message
            )
        self.last_error = message
        self._group_ready = False  # re-check the group once Redis answers (it may be new)

    # ---------------------------------------------------------------------- acknowledging

    def ack(self, tokens: Sequence[str]) -> None:
        """Acknowledge processed deliveries (their entry ids): they will not come again.

        If Redis is unreachable the acknowledgements are kept and sent with the next call;
        until then the entries stay pending (and may be redelivered: at-least-once).

        Raises:
            ValueError: a token that is no stream entry id (after the others were
                acknowledged: one bad token made Redis refuse the whole XACK, trial 147).
        """
        ids, bad = split_tokens(tokens, _is_entry_id, text)
        ids = self._parents.mine(ids, self.name)  # a forked child's: not the parent's
        for entry_id in ids:
            self._in_flight.pop(entry_id, None)
        self._deferred_acks.extend(ids)
        self._flush_acks()
        if bad:
            raise foreign_tokens(bad, "stream entry ids such as '1700000000000-0'")

    def _flush_acks(self) -> None:
        ids, self._deferred_acks = self._deferred_acks, []
        if not ids:
            return
        try:
            confirmed = int(self._call(("XACK", self.stream, self.group, *ids)))
        except redis.ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            self._group_ready = False  # the group and its pending entries are gone
            confirmed = 0
        except TRANSIENT_ERRORS as exc:
            self._note_error(exc, "acknowledge")
            self._deferred_acks = (ids + self._deferred_acks)[-_MAX_DEFERRED_ACKS:]
            # Redis may have applied it and only the reply been lost: then the next XACK finds
            # these no longer pending, which is not a loss of Redis's data (`ack_unheld`).
            self._maybe_acked.update(ids)
            return
        unconfirmed = len(ids) - confirmed
        if self._maybe_acked:
            maybe = len(self._maybe_acked.intersection(ids))
            self._maybe_acked.difference_update(ids)
            applied_before = min(maybe, unconfirmed)
            confirmed += applied_before
            unconfirmed -= applied_before
        self.acked += confirmed
        # Delivered and processed, but no longer pending in Redis: the stream or the group was
        # deleted, or Redis lost its data (a restart without persistence). Counted, so that
        # `delivered` and `acked` still add up.
        self.ack_unheld += unconfirmed

    def close(self) -> None:
        """Stop reading and close the consumer's own connection; unacknowledged deliveries
        stay pending for a later reader. Acknowledgements still to send are sent first: against
        a frozen server that waits up to the client's socket timeout (10 s with a
        `from_settings` client), then counts them in `acks_unsent`."""
        self._trimmed_unread_said.say_now()
        self._trimmed_pending_said.say_now()
        if self._deferred_acks:
            # Closing must not raise; unacknowledged entries will be redelivered.
            with contextlib.suppress(Exception):
                self._flush_acks()
        if self._deferred_acks:  # Redis did not take them: said, not dropped without a word
            self.acks_unsent += len(self._deferred_acks)
            log.warning(
                "eventbus redis consumer %s closed with %d acknowledgement(s) Redis did not "
                "confirm (%s): those entries may stay pending in group %s and be delivered "
                "again (at-least-once: expect them twice; a server that was only frozen may "
                "still apply them when it resumes)",
                self.name,
                len(self._deferred_acks),
                self.last_error or "no answer",
                self.group,
            )
            self._deferred_acks.clear()
        self._closed = True
        # Closing must not raise: what is not given back is claimed after `claim_idle`.
        try:
            self._give_back()
        except Exception as exc:  # said: a frozen server held this close 10 s in silence
            self.last_error = safe_error(exc)
            log.warning(
                "eventbus redis consumer %s could not hand back the entries it had read ahead "
                "(%s): another consumer of group %s claims them after claim_idle (%g s)",
                self.name,
                self.last_error,
                self.group,
                self.claim_idle,
            )
        self._conn.reset()

    def release(self, tokens: Sequence[Any]) -> None:
        """Releasable: take back deliveries nobody processed (the dispatcher's shutdown
        deadline cut them off) without counting this delivery: XCLAIM to itself with
        RETRYCOUNT one less than Redis counted, IDLE just past `claim_idle` (claimable at once
        by any member) and JUSTID, for each entry still pending under this consumer, checked and
        claimed in one script (a peer may have claimed one meanwhile, review 149). A restart
        re-reading them counts one delivery again, so restarts never add up to
        `max_deliveries` (five rolling restarts while a sink's destination was down moved its
        backlog to the dead-letter stream, trial 146). Never raises."""
        ids: list[str] = []
        try:
            ids = [text(token) for token in tokens]
            for entry_id in ids:
                self._in_flight.pop(entry_id, None)
            idle_ms = self._idle_to_claim_at_once()
            for i in range(0, len(ids), 1000):
                self._client.eval(
                    STREAM_RELEASE, 1, self.stream, self.group, self.name, idle_ms,
                    *ids[i : i + 1000],
                )  # fmt: skip
        except Exception as exc:  # the capability never raises: they stay pending, counted
            if isinstance(exc, redis.ResponseError) and _is_nogroup(exc):
                try:  # the entries handed back themselves tell best (review 227)
                    lost = self._group_lost_entries(max(ids, key=entry_order))
                except Exception:  # cannot tell: a loss unsaid is worse than one said in doubt
                    lost = True
                self._group_gone(lost, f"{len(ids)} deliveries could not be handed back")
                return
            log.warning(
                "eventbus redis consumer %s could not hand back %d deliveries uncounted (%s): "
                "this delivery counts toward max_deliveries (%d)",
                self.name,
                len(ids),
                safe_error(exc),
                self.max_deliveries,
            )

    def _give_back(self) -> None:
        """Make the entries read ahead and never returned claimable at once by any consumer of
        the group: XCLAIM to itself with IDLE just past `claim_idle` and JUSTID (which leaves
        their delivery count as it is)."""
        if self._ahead is not None:
            self._take_ahead()
        ids = [text(i) for i, _ in self._surplus]
        self._surplus = []
        self._claim_to_self(ids, idle_ms=self._idle_to_claim_at_once())

    def _idle_to_claim_at_once(self) -> int:
        """The IDLE that makes an entry claimable by the next reclaim of any member (of this
        `claim_idle`): one millisecond past it, so that a reclaim in the same millisecond
        finds it too, where a server compares strictly (fakeredis does: the entries given
        back at close stayed with the closed consumer one time in four, CI's floor run)."""
        return int(self.claim_idle * 1000) + 1

    def after_fork_in_child(self) -> None:
        """In a forked child (gunicorn --preload, multiprocessing), a consumer built before the
        fork is the child's own consumer from now on.

        What the parent read and has not acknowledged is the parent's to acknowledge: the
        child forgets it (it neither acknowledges nor keeps it alive), and does not re-read
        the name's pending entries at its first read (the parent is still processing them).
        A consumer with the default name (`host-pid`) takes the child's pid, so parent and
        child are two consumers of the group; one with a name you gave keeps it, shared with
        the parent (Redis then hands each new entry to one of the two).
        """
        if self._named_after_pid:
            self.name = default_consumer_name()
        # The child's figures start from the parent's; what was out is not the child's to
        # acknowledge (helper-107: delivered 20, acked 15 read as 5 left by the child).
        self.left_to_parent += len(self._in_flight) + len(self._deferred_acks)
        self._parents.add([*self._in_flight, *self._deferred_acks])
        self._in_flight.clear()
        self._deferred_acks.clear()
        self._maybe_acked.clear()
        self._conn.forget()  # the parent's socket, and the reply read ahead on it
        self._ahead = None
        self._surplus = []  # the parent's, as what it has in flight
        self._backlog_from = None
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_refresh = 0.0
        # New locks, and the trimmed entries counted so far are the parent's to say (review 258).
        self._trimmed_unread_said.after_fork_in_child(self.trimmed_unread)
        self._trimmed_pending_said.after_fork_in_child(self.trimmed)

    def figures(self) -> dict[str, Any]:
        """This consumer's counters."""
        return {
            "name": self.name,
            "delivered": self.delivered,
            "acked": self.acked,
            "left_to_parent": self.left_to_parent,
            "ack_unheld": self.ack_unheld,
            "claimed": self.claimed,
            "dead_lettered": self.dead_lettered,
            "trimmed": self.trimmed,
            "trimmed_unread": self.trimmed_unread,
            "acks_unsent": self.acks_unsent,
            # The name every source's lost-before-read count has.
            "missed": self.trimmed + self.trimmed_unread,
            # The name every source's count of losses it cannot size has.
            "missed_unknown": self.missed_unknown,
            "last_error": self.last_error,
            "group_joined": self._group_ready,
        }

    def backlog(self) -> dict[str, int | None]:
        """The group's `lag` (entries not yet delivered to it, `group_lag`; None if Redis
        cannot tell) and `pending` (delivered, not acknowledged), from XINFO. Does I/O;
        thread-safe (it touches no consumer state), so a metrics scrape may call it while a
        read blocks.

        Raises:
            redis.RedisError: Redis does not answer.
        """
        pipe = self._client.pipeline(transaction=False)
        pipe.xinfo_groups(self.stream)
        pipe.xinfo_stream(self.stream)
        try:
            groups, stream = pipe.execute()
        except redis.ResponseError:  # the stream does not exist (yet)
            return {"lag": None, "pending": 0}
        for row in groups:
            if text(row["name"]) == self.group:
                return {"lag": group_lag(row, stream), "pending": int(row["pending"])}
        return {"lag": None, "pending": 0}

    def __repr__(self) -> str:
        return f"<StreamConsumer {self.name!r} group={self.group!r} stream={self.stream!r}>"
