"""`GroupConsumer`: at-least-once reading through a durable JetStream pull consumer.

A group is one durable consumer of the stream (created if missing, delivering from the oldest
message the stream holds); its members pull from it and share the work. A delivery is
acknowledged only when the caller says so (`ack()`): one that is not acknowledged within the
consumer's AckWait is delivered again, to any member. `keep_alive()` sends in-progress
acknowledgements (`+WPI`) for what a member still holds, so a slow sink does not get its batch
redelivered to a peer meanwhile. A member that closes cleanly hands what it held back at once
(`-NAK`); one that dies leaves it for AckWait.

The member counts deliveries itself (each message says how often it was delivered): an entry
delivered more than `max_deliveries` times, or one that does not decode, is published to the
dead-letter stream with the reason in its headers and then terminated (`+TERM`), never dropped.
The server's own MaxDeliver stays unlimited on purpose: at that limit it would stop delivering
an entry without telling anyone, and a dead-letter write that failed could not be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from eventbus_core import (
    BackendUnavailableError,
    Backoff,
    Delivery,
    Event,
    SettingsError,
    WireFormatError,
    check_count,
    check_positive_seconds,
    get_logger,
)
from eventbus_core.capabilities import ParentsDeliveries, foreign_tokens, split_tokens
from eventbus_nats._flush import flush_within
from eventbus_nats._groups import (
    DEFAULT_MAX_ACK_PENDING,
    DeliveryCounter,
    UnfitGroup,
    dead_letter,
    open_group,
)
from eventbus_nats._link import Link, LinkClosed
from eventbus_nats._options import safe_error
from eventbus_nats._settings import INT64, check_name, check_nats_duration

__all__ = ["GroupConsumer", "default_consumer_name"]

log = get_logger("eventbus.nats")

_CHECK_EVERY: Final = 5.0  # seconds of silence before a member checks its group still exists
_CALL_MARGIN: Final = 5.0  # seconds a request may take on top of a read's own timeout
_MAX_DEFERRED_ACKS: Final = 100_000
_ACK_CONFIRM_WAIT: Final = 2.0  # seconds `ack()` waits for the server to confirm it has them
_ACK_PREFIX: Final = "$JS.ACK."  # how every JetStream delivery's reply subject begins
_BACKLOG_WAIT: Final = 2.0  # seconds backlog() waits for the server (a metrics scrape's bound)
Raw = tuple[str, bytes, int, int]  # reply subject (the token), data, deliveries, stream seq


def default_consumer_name() -> str:
    """`host-pid`: unique per process; shown in figures and dead letters."""
    return f"{socket.gethostname()}-{os.getpid()}"


class GroupConsumer:
    """One member of a consumer group; an `AckableSource` for the dispatcher, with
    `keep_alive()` and `figures()`.

    Built by `NatsEventBus.consumer()`. Methods block and are meant for one thread. Delivery
    tokens are the messages' reply subjects (str).

    Attributes:
        group: The group (the durable consumer's name).
        name: This member's name (figures, logs, dead letters).
    """

    def __init__(
        self,
        link: Link,
        group: str,
        name: str,
        *,
        batch_size: int = 100,
        ack_wait: float = 30.0,
        max_deliveries: int = 5,
        max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
        on_close: Callable[[GroupConsumer], None] | None = None,
    ) -> None:
        # Whole counts and a finite ack_wait: NaN passed `ack_wait <= 0`, and every read then
        # failed (trial 150).
        check_count("batch_size", batch_size, 1)
        check_count("max_deliveries", max_deliveries, 1, maximum=INT64)
        check_count("max_ack_pending", max_ack_pending, 1)
        check_positive_seconds("ack_wait", ack_wait)
        check_nats_duration(ack_wait, "ack_wait")
        try:
            check_name(group, "consumer group")
        except ValueError as exc:
            # The dispatcher's per-sink groups are `GROUP:SINK`: a group that passed the
            # settings may still be too long once a sink's name is added.
            raise SettingsError(
                f"{exc} (set from EVENTBUS_NATS_GROUP; eventbus dispatch adds ':SINK' to it "
                "for each sink in per-sink mode, so leave room for the sink's name)"
            ) from None
        link.acquire()
        self._link = link
        self.stream = link.layout.stream
        self.group = group
        self.name = name
        self.batch_size = batch_size
        self.ack_wait = ack_wait
        self.max_deliveries = max_deliveries
        self.max_ack_pending = max_ack_pending
        self._on_close = on_close
        self._closed = False
        self.delivered = 0
        self.acked = 0  # confirmed by the server
        self.acks_unsent = 0  # acknowledgements the server never confirmed before close()
        self.redelivered = 0
        self.dead_lettered = 0
        self.missed_unknown = 0  # times the stream was lost with entries the group had not read
        self.groups_created = 0
        self.last_error: str | None = None
        self._named_after_pid = name == default_consumer_name()
        self._parents = ParentsDeliveries()  # out when this process was forked: not its own
        self._fresh_state()

    def after_fork_in_child(self) -> None:
        """In a forked child, the consumer is the child's own: its counters start at zero, as
        every NATS figure of a child does (operations.md, "Forking servers"; they carried the
        parent's, trial 230), one with the default name (`host-pid`) takes the child's pid,
        and what the parent had out is the parent's to acknowledge: given those tokens, the
        child skips them (`ParentsDeliveries`) rather than count the parent's work twice."""
        self._parents.add([*self._in_flight, *self._deferred_acks])
        self.delivered = self.acked = self.acks_unsent = self.redelivered = 0
        self.dead_lettered = self.missed_unknown = self.groups_created = 0
        if self._named_after_pid:
            self.name = default_consumer_name()
        self._fresh_state()

    def _fresh_state(self) -> None:
        """Forget what belongs to the parent (its pull subscription and held deliveries)."""
        self._psub: JetStreamContext.PullSubscription | None = None
        self._stream_created: Any = None  # when the bound stream was made (StreamInfo.created)
        self._binding: asyncio.Task[None] | None = None  # a bind still going on (_bound_by)
        self._seen_reconnects = self._link.reconnects
        self._next_check = 0.0
        self._next_refresh = 0.0
        # Handed over and not yet acknowledged: token -> stream sequence, and the newest token
        # of each sequence (a redelivery comes with a new token; the old one is dead).
        self._in_flight: dict[str, int] = {}
        self._token_of: dict[int, str] = {}
        self._received = DeliveryCounter()
        self._deferred_acks: list[str] = []
        self._backoff = Backoff()

    # ------------------------------------------------------------------------------ reading

    def read(self, max_items: int, timeout: float) -> list[Delivery]:
        """Return up to `max_items` (at most `batch_size`) deliveries, waiting up to `timeout`
        seconds for the first. Returns [] on timeout, and while NATS is unreachable (after
        waiting), never raising for it.

        Raises:
            UnfitGroup: (a `SettingsError`) a consumer of the group's name exists and cannot
                serve as the group (see `open_group`); waiting cannot help.
        """
        if self._closed:
            return []
        wait = max(timeout, 0.01)
        deadline = time.monotonic() + wait
        count = max(1, min(max_items, self.batch_size))
        try:
            raw = self._link.call(self._fetch(count, wait), wait + _CALL_MARGIN)
        except LinkClosed:
            return []
        except UnfitGroup as exc:
            self._note_error(exc)
            raise UnfitGroup(str(exc)) from exc  # a fresh one: the binding's task holds its own
        except Exception as exc:
            self._note_error(exc)
            time.sleep(max(0.0, min(self._backoff.next(), deadline - time.monotonic())))
            return []
        self._backoff.reset()
        return self._decode(raw)

    async def _fetch(self, count: int, timeout: float) -> list[Raw]:
        deadline = time.monotonic() + timeout
        if self._deferred_acks:
            await self._send_acks()
        if self._psub is None:
            if not await self._bound_by(deadline):
                return []
            timeout = max(0.01, deadline - time.monotonic())
        elif self._link.reconnects != self._seen_reconnects or time.monotonic() >= self._next_check:
            # Bounded by the read's own timeout: a frozen server would hold it for the request's
            # 5 s. Given up, it is tried again _CHECK_EVERY seconds on (it set that time first).
            try:
                bound = await asyncio.wait_for(
                    self._verify(), max(0.01, deadline - time.monotonic())
                )
            except TimeoutError:
                return []
            if not bound:  # the group was gone, and binding it again ran out of time
                return []
            timeout = max(0.01, deadline - time.monotonic())
        assert self._psub is not None
        try:
            msgs = await self._psub.fetch(count, timeout=timeout)
        except TimeoutError:
            return []
        self._next_check = time.monotonic() + _CHECK_EVERY
        out: list[Raw] = []
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            n = self._received.count(seq, meta.num_delivered)
            if n > self.max_deliveries:
                reason = f"delivered {n} times (max_deliveries={self.max_deliveries})"
                await self._dead_letter(msg.reply, msg.data, n, seq, reason)
                self._release(seq)  # an earlier delivery of it, held here, is over too
            else:
                out.append((msg.reply, msg.data, n, seq))
        return out

    def _decode(self, raw: list[Raw]) -> list[Delivery]:
        out: list[Delivery] = []
        bad: list[tuple[Raw, str]] = []
        for item in raw:
            token, data, n, seq = item
            try:
                event = Event.from_json(data).with_log_id(seq)
            except WireFormatError as exc:
                bad.append((item, f"undecodable: {exc}"))
                continue
            out.append(Delivery(event, token=token, attempts=n))
            if n > 1:
                self.redelivered += 1
        if bad:
            try:
                self._link.call(self._dead_letter_many(bad), _CALL_MARGIN)
            except Exception as exc:  # left unacknowledged: redelivered and tried again
                self._note_error(exc)
        self.delivered += len(out)
        for d in out:
            self._hold(d.token, d.event.log_id)
        return out

    def _hold(self, token: str, seq: int) -> None:
        """Track a delivery handed over; a redelivery of `seq` replaces the earlier token,
        which can no longer be acknowledged (so it must not be counted or kept alive)."""
        old = self._token_of.get(seq)
        if old is not None and old != token:
            self._in_flight.pop(old, None)
        self._token_of[seq] = token
        self._in_flight[token] = seq

    def _release(self, seq: int) -> None:
        token = self._token_of.pop(seq, None)
        if token is not None:
            self._in_flight.pop(token, None)

    def _forget(self, token: str) -> None:
        seq = self._in_flight.pop(token, None)
        if seq is not None:
            if self._token_of.get(seq) == token:
                del self._token_of[seq]
            self._received.forget(seq)

    async def _bound_by(self, deadline: float) -> bool:
        """Bind to the group, waiting until `deadline` at most: True once bound.

        The binding (a few JetStream requests, 5 s each at most) goes on in the background past
        the deadline, and the next read waits for it again: a frozen server costs a read its
        own timeout, not the requests' (5 s for read(timeout=0.2)), and a slow but healthy one
        (a cluster electing the new group's leader) is still bound in the end, however short
        each read's timeout.

        Raises:
            Exception: what the binding raised while this read waited for it (the read notes
                it); a binding that failed after its read gave up is noted by the next read,
                which starts a new one.
        """
        task = self._binding
        if task is not None and task.done():
            self._binding = None
            failure = None if task.cancelled() else task.exception()
            if failure is None and self._psub is not None:
                return True
            if failure is not None:
                self._note_error(failure)  # said now, and a new binding starts at once
            task = None
        if task is None:
            task = self._binding = asyncio.get_running_loop().create_task(self._bind())
        try:
            await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        self._binding = None
        return self._psub is not None

    async def _bind(self) -> None:
        info, created = await open_group(
            self._link,
            self.group,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            max_deliveries=self.max_deliveries,
        )
        self.groups_created += created
        if info.config.ack_wait:
            self.ack_wait = info.config.ack_wait  # the group's, if it existed already
        js = await self._link.jetstream()
        self._psub = await js.pull_subscribe_bind(self.group, stream=self.stream)
        with contextlib.suppress(Exception):  # only for the warning of a stream made anew
            self._stream_created = (await js.stream_info(self.stream)).created
        self._seen_reconnects = self._link.reconnects
        self._next_check = time.monotonic() + _CHECK_EVERY

    async def _verify(self) -> bool:
        """Bind again if the group was deleted (it is re-created, from the oldest entry).
        True while bound."""
        self._seen_reconnects = self._link.reconnects
        self._next_check = time.monotonic() + _CHECK_EVERY
        js = await self._link.jetstream()
        try:
            await js.consumer_info(self.stream, self.group)
        except nats.js.errors.NotFoundError:
            log.warning("eventbus nats: consumer group %s of %s is gone; re-creating it",
                        self.group, self.stream)  # fmt: skip
            await self._warn_if_the_stream_was_made_anew(js)
            await self._unbind()
            self._in_flight.clear()
            self._token_of.clear()
            self._received.clear()
            await self._bind()
        return self._psub is not None

    async def _warn_if_the_stream_was_made_anew(self, js: JetStreamContext) -> None:
        """The group went with its stream (deleted, then made again by a writer): what the
        stream held that this group had not read went with it, and no figure can say how much.
        Said, with the LogIDs that start over: only the group's re-creation was (trial 160)."""
        before = self._stream_created
        try:
            now = (await js.stream_info(self.stream)).created
        except nats.js.errors.NotFoundError:
            now = None
        except Exception:
            return  # cannot tell: the group's line above stands alone
        if before is not None and now != before:
            # A loss, of unknown size: counted as Redis streams count theirs, so that the
            # metric, the alert and `eventbus dispatch`'s exit status see it (trial 226: 1,638
            # events lost with a server's store, exit 0).
            self.missed_unknown += 1
            log.warning(
                "eventbus nats: stream %s was deleted, or lost with its server's store%s: the "
                "entries group %s had not read yet "
                "were lost with it (eventbus cannot tell how many: counted once in "
                "missed_unknown), and the LogIDs of what is written now start over from 1",
                self.stream,
                " and made again" if now is not None else "",
                self.group,
            )

    async def _unbind(self) -> None:
        psub, self._psub = self._psub, None
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    # ------------------------------------------------------------------------- dead letters

    async def _dead_letter_many(self, items: list[tuple[Raw, str]]) -> None:
        for (token, data, n, seq), reason in items:
            await self._dead_letter(token, data, n, seq, reason)

    async def _dead_letter(self, token: str, data: bytes, n: int, seq: int, reason: str) -> None:
        """Move the entry to the dead-letter stream (see `_deadletter.py`); if that fails it
        stays pending: redelivered after AckWait and dead-lettered then."""
        try:
            await dead_letter(self._link, token=token, data=data, seq=seq, deliveries=n,
                              group=self.group, consumer=self.name, reason=reason)  # fmt: skip
        except Exception as exc:
            self._note_error(exc)
            return
        self._forget(token)
        self._received.forget(seq)
        self.dead_lettered += 1

    # ---------------------------------------------------------------------- acknowledging

    def ack(self, tokens: Sequence[Any]) -> None:
        """Acknowledge processed deliveries (their tokens): they will not come again.

        If NATS is unreachable the acknowledgements are kept and sent with the next call;
        until then the entries may be redelivered (at-least-once).
        """
        # A delivery's token is its reply subject: anything else was acknowledged as if it were
        # one, and counted in `acked` (trial 150).
        ids, bad = split_tokens(tokens, lambda token: token.startswith(_ACK_PREFIX))
        ids = self._parents.mine(ids, self.name)  # a forked child's: not the parent's
        for token in ids:
            self._forget(token)
        self._deferred_acks.extend(ids)
        if not self._closed:
            try:
                self._link.call(self._send_acks(), _CALL_MARGIN)
            except Exception as exc:
                self._note_error(exc)
        if bad:
            raise foreign_tokens(bad, f"their reply subjects, '{_ACK_PREFIX}...'")

    async def _send_acks(self) -> None:
        """Send the kept acknowledgements and count them in `acked` once the server confirmed
        having them (a round trip). Else they are kept, and sent again with the next call (a
        second +ACK of an entry the server has is ignored): counted when sent, those queued
        in the client for a server that had died were counted acked and came again (trial
        226: 497 of them).

        Raises:
            TimeoutError: the server did not confirm them within `_ACK_CONFIRM_WAIT`.
            Exception: the client could not send them (the connection is down).
        """
        acks, self._deferred_acks = self._deferred_acks, []
        if not acks:
            return
        confirmed = False
        try:
            nc = await self._link.client()
            # A reconnection in between (to another server) answers the flush, yet what went
            # to the server that dropped the connection is lost: not confirmed.
            reconnects = nc.stats["reconnects"]
            for token in acks:
                await nc.publish(token, b"+ACK")
            confirmed = (
                await flush_within(nc, _ACK_CONFIRM_WAIT) and nc.stats["reconnects"] == reconnects
            )
        finally:
            if confirmed:
                self.acked += len(acks)
            else:
                self._deferred_acks = (acks + self._deferred_acks)[-_MAX_DEFERRED_ACKS:]
        if not confirmed:
            raise TimeoutError(
                f"NATS did not confirm acknowledgements within {_ACK_CONFIRM_WAIT:g} s (kept, "
                "sent again with the next call; the entries may come again meanwhile)"
            )

    def keep_alive(self) -> None:
        """Tell the group that what this member holds is still being processed.

        Sends an in-progress acknowledgement for every delivery handed over and not yet
        acknowledged, which restarts its AckWait; at most every AckWait / 2, cheap otherwise.
        Never raises for NATS trouble (the next read reports it).
        """
        now = time.monotonic()
        if not self._in_flight or now < self._next_refresh or self._closed:
            return
        self._next_refresh = now + self.ack_wait / 2
        try:
            self._link.call(self._signal(list(self._in_flight), b"+WPI"), 2.0)
        except Exception as exc:
            self._note_error(exc)

    async def _signal(self, tokens: list[str], what: bytes) -> None:
        nc = await self._link.client()
        for token in tokens:
            await nc.publish(token, what)
        await flush_within(nc, 2)

    def close(self) -> None:
        """Stop reading: send pending acknowledgements, hand back (`-NAK`) what was not
        acknowledged so another member gets it at once. Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        held = list(self._in_flight)
        self._in_flight.clear()
        self._token_of.clear()
        with contextlib.suppress(Exception):
            self._link.call(self._close(held), _ACK_CONFIRM_WAIT + 1.0)
        unsent = len(self._deferred_acks)
        if unsent:  # said, not dropped without a word (dispatcher.md, Stopping)
            self.acks_unsent += unsent
            self._deferred_acks = []
            log.warning(
                "eventbus nats consumer %s closed with %d acknowledgement(s) NATS did not "
                "confirm (%s): those entries may stay pending in group %s and be delivered "
                "again (at-least-once: expect them twice)",
                self.name,
                unsent,
                self.last_error or "no answer",
                self.group,
            )
        self._link.release(time.monotonic() + 1.0)
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback(self)

    async def _close(self, held: list[str]) -> None:
        binding, self._binding = self._binding, None
        if binding is not None:
            binding.cancel()
            if binding.done() and not binding.cancelled():
                binding.exception()  # retrieved: asyncio would log it as never retrieved
        try:
            if self._deferred_acks:
                await self._send_acks()
            if held:
                await self._signal(held, b"-NAK")
        except Exception as exc:  # a server that does not answer gets no hand-back either
            self._note_error(exc)
        await self._unbind()

    # --------------------------------------------------------------------------- figures

    def _note_error(self, exc: BaseException) -> None:
        message = safe_error(exc)
        if message != self.last_error:
            log.warning("eventbus nats consumer %s (group %s): %s", self.name, self.group, message)
        self.last_error = message

    def figures(self) -> dict[str, Any]:
        """This member's counters (no I/O)."""
        return {
            "name": self.name,
            "group": self.group,
            "delivered": self.delivered,
            "acked": self.acked,
            # Kept for the next call, sent and not confirmed yet: what a stop that left this
            # consumer behind (a frozen server) would otherwise count nowhere (trial 230).
            "acks_unconfirmed": len(self._deferred_acks),
            "acks_unsent": self.acks_unsent,
            "redelivered": self.redelivered,
            "dead_lettered": self.dead_lettered,
            "missed_unknown": self.missed_unknown,
            "in_flight": len(self._in_flight),
            # Bound to its group over a connection that is up: `/readyz` said "reading" of a
            # lane whose server was dead, where a Redis lane says "not joined" (trial 239).
            "group_joined": self._psub is not None and self._link.connected,
            "last_error": self.last_error,
        }

    def backlog(self) -> dict[str, int | None]:
        """The group's `lag` (messages not yet delivered to it) and `pending` (delivered, not
        acknowledged), from the server's consumer info: `eventbus_consumer_lag` and
        `eventbus_consumer_pending`. Does I/O, at most `_BACKLOG_WAIT` seconds; thread-safe.

        Raises:
            BackendUnavailableError: NATS did not answer in time, or the connection is down,
                or the cluster cannot serve the stream now (as `describe()` and `check()` say
                it; a bare TimeoutError escaped callers that catch that, trial 125, and
                nats-py's own errors during a lost majority, trial 209).
            LinkClosed: the bus was stopped and its connection closed.
        """
        try:
            return self._link.call(self._backlog(), _BACKLOG_WAIT)
        except TimeoutError as exc:
            raise BackendUnavailableError(str(exc)) from None
        except LinkClosed:
            raise
        except (OSError, nats.errors.Error) as exc:  # ConnectionError, a 503, no servers
            raise BackendUnavailableError(
                f"NATS at {self._link.where} did not give group {self.group!r}'s figures "
                f"({safe_error(exc)})"
            ) from None

    async def _backlog(self) -> dict[str, int | None]:
        js = await self._link.answering()
        try:
            info = await js.consumer_info(self.stream, self.group)
        except nats.js.errors.NotFoundError:  # not created yet (or deleted): nothing held
            return {"lag": None, "pending": 0}
        return {"lag": info.num_pending, "pending": info.num_ack_pending or 0}

    def __repr__(self) -> str:
        return f"<GroupConsumer {self.name!r} group={self.group!r} stream={self.stream!r}>"
