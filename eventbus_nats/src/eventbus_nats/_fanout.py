"""Fan-out subscriptions: each one reads the stream through an ephemeral ordered consumer.

`subscribe()` creates a consumer of its own (no acknowledgements, in memory, one replica,
deleted by the server after `_INACTIVE` seconds unused) that starts at the next message, and a
coroutine that pulls from it only as much as the subscription has room for: a slow subscriber
makes messages wait in the stream, not in memory. The reader keeps the last stream sequence it
handed over; whenever its consumer is gone (server restarted, its node lost, expired while the
subscriber was full) or an error says it may be, it creates a new one from the next sequence,
which is what makes the consumer "ordered". A jump in stream sequences means messages were
removed (limits, purge) before this subscriber read them: they are counted in its `dropped`.

At stop, `drain_followers()` (`_stopping.py`) lets each reader catch up to the last sequence
this bus stored (after the writer confirmed what it sent), then ends it; what it could not hand
over by then is counted in its `dropped` too. Neither of these is the consumer's slowness, so
they are counted without the core's "buffer is full" warning, with a warning of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Final

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from eventbus_core import Backoff, Event, Subscription, WireFormatError, get_logger
from eventbus_nats._link import Link
from eventbus_nats._options import safe_error

__all__ = ["Follower", "NatsSubscription"]

log = get_logger("eventbus.nats")

_INACTIVE: Final = 30.0  # seconds before the server deletes an unused subscription consumer
_CHECK_EVERY: Final = 5.0  # seconds of silence before a reader checks its consumer still exists
_FULL_WAIT: Final = 0.02  # seconds between looks at a full subscription
_STUCK_AFTER: Final = 0.25  # a buffer full this long at stop is not waited for


class NatsSubscription(Subscription):
    """A `Subscription` fed from the stream.

    Attributes:
        last_log_id: Stream sequence (LogID) of the newest event handed to it.
        missed: Events removed from the stream before it could read them (apart from
            `dropped`, as every subscription's).
    """

    def __init__(
        self,
        capacity: int,
        *,
        name: str | None = None,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        super().__init__(capacity, name=name, on_close=on_close)
        self.last_log_id = 0
        self._missed = 0
        self.unhanded = 0

    @property
    def missed(self) -> int:
        """Events removed from the stream (limits, a purge) before it could read them."""
        return self._missed

    def count_missed(self, n: int) -> None:
        """Count `n` events removed from the stream before this subscription read them."""
        self._missed += n

    def count_not_handed(self, n: int) -> None:
        """Count `n` events in this subscription's `dropped` that were not handed to it for a
        reason other than a full buffer (removed from the stream, the bus stopped): the
        caller logs the reason, so the core's "buffer is full" warning is not given."""
        if n > 0:
            self.dropped += n


class Follower:
    """Moves new stream messages into one subscription, from an ephemeral consumer.

    Args:
        link: The connection.
        sub: The subscription to feed.
        start_after: Stream sequence to start after when the consumer is first made later than
            `subscribe()` (the server was unreachable then); None: the newest at that time.
        poll: Longest single pull request.
        chunk: Most messages per pull.
    """

    def __init__(
        self,
        link: Link,
        sub: NatsSubscription,
        *,
        start_after: int | None = None,
        poll: float = 0.5,
        chunk: int = 500,
    ) -> None:
        self._link = link
        self.sub = sub
        self.last_seq: int | None = start_after
        self._poll = poll
        self._chunk = chunk
        self._psub: JetStreamContext.PullSubscription | None = None
        self._consumer: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen_reconnects = link.reconnects
        self._next_check = 0.0
        self._full_since: float | None = None
        self._stream_created: object = None  # when the stream read was created (server time)
        self.ended = False  # its close counted what it left: stop() counts nothing more
        self.last_error: str | None = None

    # --------------------------------------------------------------------- on the loop

    async def start(self, wait: float) -> None:
        """Create the consumer (waiting up to `wait` seconds), then follow in the background."""
        deadline = time.monotonic() + wait
        try:
            while not self._link.connected:  # no waiting for a server known to be down
                if self._link.last_error is not None or time.monotonic() >= deadline:
                    raise TimeoutError(f"NATS at {self._link.where} is unreachable")
                await asyncio.sleep(0.01)
            await asyncio.wait_for(self._create(), max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # NATS unreachable: the reader creates it once it answers
            self._note_error(exc)
        finally:
            if not self.sub.finished:
                self._task = asyncio.get_running_loop().create_task(self._run())

    async def _create(self) -> None:
        link = self._link
        js = await link.jetstream()
        await link.ensure_stream()
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE,
            filter_subject=link.layout.subject,
            inactive_threshold=_INACTIVE,
            mem_storage=True,
            num_replicas=1,
            max_deliver=1,
        )
        stream = await js.stream_info(link.layout.stream)
        created = getattr(stream, "created", None)
        recreated = self.last_seq is not None and (
            stream.state.last_seq < self.last_seq
            or (created is not None and self._stream_created not in (None, created))
        )
        if recreated:
            # The stream was deleted and created anew: its sequences started again. (The
            # sequences alone cannot tell once the new stream has caught up with the old one:
            # a subscriber that read 100 skipped the new stream's first 100.)
            log.warning(
                "eventbus nats subscription %s: stream %s was recreated (LogIDs restarted); "
                "reading it from its start",
                self.sub.name,
                link.layout.stream,
            )
            self.last_seq = max(0, stream.state.first_seq - 1)
        self._stream_created = created
        if self.last_seq is None:
            config.deliver_policy = api.DeliverPolicy.NEW
        else:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.last_seq + 1
        info = await js.add_consumer(link.layout.stream, config)
        if self.last_seq is None:
            # Starting at "new": what the stream held then counts as read.
            self.last_seq = info.delivered.stream_seq if info.delivered else 0
        self._consumer = info.name
        self._psub = await js.pull_subscribe_bind(info.name, stream=link.layout.stream)
        self._seen_reconnects = link.reconnects
        self._next_check = time.monotonic() + _CHECK_EVERY

    async def _run(self) -> None:
        backoff = Backoff()
        while not self.sub.finished:
            try:
                if self._psub is None:
                    await self._create()
                    backoff.reset()
                if self.sub.space() <= 0:
                    await asyncio.sleep(_FULL_WAIT)
                    continue
                if (
                    self._link.reconnects != self._seen_reconnects
                    or time.monotonic() >= self._next_check
                ):
                    await self._verify()
                    continue
                assert self._psub is not None
                try:
                    msgs = await self._psub.fetch(
                        min(self.sub.space(), self._chunk), timeout=self._poll
                    )
                except TimeoutError:
                    continue
                self._hand_over(msgs)
                self._next_check = time.monotonic() + _CHECK_EVERY
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # recreate the consumer from the next sequence
                self._note_error(exc)
                await self._drop_consumer()
                await asyncio.sleep(backoff.next())

    async def _verify(self) -> None:
        """Recreate the consumer if the server no longer has it."""
        self._seen_reconnects = self._link.reconnects
        self._next_check = time.monotonic() + _CHECK_EVERY
        js = await self._link.jetstream()
        if self._consumer is None:
            return
        try:
            await js.consumer_info(self._link.layout.stream, self._consumer)
        except nats.js.errors.NotFoundError:
            await self._drop_consumer()

    def _hand_over(self, msgs: list[Msg]) -> None:
        events: list[Event] = []
        sub = self.sub
        if sub.finished:
            # A fetch that completed as stop ended the subscription: `drain_followers()` has
            # accounted everything up to its target already; nothing more is this one's.
            return
        bad: list[int] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            last = self.last_seq
            if last is not None:
                if seq <= last:
                    continue  # read already, before the consumer was recreated
                if seq > last + 1 and self._link.subject_alone:
                    self._missed(seq - last - 1, last)
            self.last_seq = seq
            try:
                events.append(Event.from_json(msg.data).with_log_id(seq))
            except WireFormatError:
                bad.append(seq)
        if bad:
            sub.count_undecodable(len(bad), f"from stream sequence {bad[0]}")
        if events:
            taken = sub.offer(events)
            if taken < len(events):
                sub.count_dropped(len(events) - taken)
        sub.last_log_id = self.last_seq or 0

    def _missed(self, n: int, after: int) -> None:
        self.sub.count_missed(n)
        log.warning(
            "eventbus nats subscription %s missed %d event(s) after LogID %d: removed from the "
            "stream (limits or purge) before it read them",
            self.sub.name,
            n,
            after,
        )

    async def _drop_consumer(self) -> None:
        psub, self._psub = self._psub, None
        self._consumer = None
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    def _note_error(self, exc: BaseException) -> None:
        message = safe_error(exc)
        if message != self.last_error:
            log.warning(
                "eventbus nats subscription %s cannot read (%s); retrying", self.sub.name, message
            )
        self.last_error = message

    async def count_behind(self, wait: float) -> int | None:
        """Stop reading, then count what the stream holds past this subscription (whoever
        stored it): what it ends without. What the stream's limits removed before it was read is
        counted as missed first (`skip_removed`). None when it cannot be told: NATS did not
        answer within `wait` seconds, or the stream holds other subjects too (its sequence
        numbers then count their messages as well)."""
        await self._stop_reading()
        last = self.last_seq
        if last is None or not self._link.subject_alone:
            return None
        try:
            info = await asyncio.wait_for(self._link.stream_info(), max(0.0, wait))
        except Exception:  # frozen, disconnected, gone: not told
            return None
        self.skip_removed(int(info.state.first_seq))
        if self.sub.finished or self.ended:
            return 0  # stop() ended it meanwhile, and counted what it left (review 217)
        # Counted here, on the loop, as stop() counts: one or the other, never both.
        self.ended = True
        behind = max(0, int(info.state.last_seq) - (self.last_seq or last))
        # Past them now: a later look at where the stream starts (stop()'s) finds nothing
        # more to call missed (review 220).
        self.last_seq = max(self.last_seq or last, int(info.state.last_seq))
        if behind:
            self.sub.unhanded += behind
            self.sub.count_not_handed(behind)
        return behind

    async def _stop_reading(self) -> None:
        """Cancel the reading task and wait for it: nothing is handed over after this."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self, wait: float = 0.5) -> None:
        """Stop following; delete the consumer if there is time (it expires by itself)."""
        await self._stop_reading()
        name = self._consumer
        await self._drop_consumer()
        js = self._link.js
        if name is not None and js is not None and wait > 0 and self._link.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(js.delete_consumer(self._link.layout.stream, name), wait)

    # ------------------------------------------------------------------------------- stop

    def behind(self, target: int) -> int:
        """Events up to stream sequence `target` not handed over yet (0 when unknown)."""
        if not target or self.last_seq is None:
            return 0
        return max(0, target - self.last_seq)

    def skip_removed(self, first_seq: int) -> None:
        """The stream now starts at `first_seq`: what it removed before this subscription read
        it (its limits, a purge) is counted as missed, and not waited for at stop."""
        last = self.last_seq
        if last is not None and first_seq - 1 > last and not self.sub.finished:
            if self._link.subject_alone:  # else some of them were other subjects' messages
                self._missed(first_seq - 1 - last, last)
            self.last_seq = first_seq - 1

    def stuck(self, now: float) -> bool:
        """True once the subscription's buffer has stayed full for a while: its consumer is
        not reading, so waiting longer for it would only delay the others."""
        if self.sub.space() > 0:
            self._full_since = None
            return False
        if self._full_since is None:
            self._full_since = now
        return now - self._full_since >= _STUCK_AFTER
