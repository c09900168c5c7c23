"""`JetStreamWriter`: the bounded buffer behind `publish()` and the coroutine that empties it.

`publish()` appends to a deque and returns, as on the Redis backends: it wakes the writer only
when the writer sleeps after a quiet spell or when the buffer passes half full (one
`call_soon_threadsafe`, never one per event). The writer, a coroutine on the link's loop, takes
up to `max_batch` events, encodes them (Go wire JSON) and sends them with JetStream's
asynchronous publish through a `BatchSender` (`_sender.py`: message ids, acknowledgement
checks, retries). Two batches are on their way at once: the next one is sent while the previous
one's PubAcks come back.

While NATS is unreachable the sender keeps its batches and backs off; the buffer fills and
`publish()` refuses and counts what does not fit. Every accepted event is settled exactly once:
written (acknowledged) or lost (not sent when `stop()`'s deadline passed, sent but still
unconfirmed when the short confirmation window after it closed, or refused by the server for
good). Events sent before the deadline whose PubAck had not come back are not lost on a guess:
`drain()` gives the sender that window to learn whether the stream holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from eventbus_core import Event, check_stop_timeout, get_logger
from eventbus_core.batching import (
    DropReport,
    LateRefusals,
    check_fork,
    check_fork_when_refusing,
    fork_announced,
    report_not_an_event,
)
from eventbus_nats._link import Link
from eventbus_nats._sender import Batch, BatchSender

__all__ = ["JetStreamWriter"]

log = get_logger("eventbus.nats")

_DEEP_SLEEP_AFTER: Final = 0.05  # seconds of silence before the writer needs a publisher's wake
_WINDOW: Final = 2  # batches on their way at once
_DROPS_CHECKED_EVERY: Final = 1.0  # seconds between two looks at the drop count
_HOLD_MAX: Final = 5.0  # seconds the writer waits for a subscription to make its consumer


class JetStreamWriter:
    """Bounded, non-blocking buffer drained into a JetStream stream in acknowledged batches.

    Args:
        link: The connection whose loop runs the writer.
        buffer_size: Events held (buffered or on their way) before `publish()` refuses more.
        max_batch: Most events per batch (at most a quarter of `buffer_size`).
        linger: Seconds the writer waits for more events while traffic flows: every wake-up of
            its thread takes the GIL from the application (see the Redis writer's notes).
        ack_timeout: Seconds to wait for a batch's acknowledgements before sending the missing
            ones again.
        exit_timeout: Seconds a process that exits without `stop()` waits at most for the
            writer to deliver what it accepted (the bus's `stop_timeout`).
    """

    def __init__(
        self,
        link: Link,
        *,
        buffer_size: int,
        max_batch: int = 500,
        linger: float = 0.05,
        ack_timeout: float = 3.0,
        exit_timeout: float = 5.0,
    ) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(
                f"buffer_size must be a positive int, got {buffer_size!r} "
                "(OBSERVABILITY_BUFFER_SIZE when built from settings)"
            )
        if max_batch < 1 or ack_timeout <= 0 or linger < 0:
            raise ValueError(
                f"need max_batch >= 1, ack_timeout > 0, linger >= 0; got {max_batch=}, "
                f"{ack_timeout=}, {linger=}"
            )
        self._link = link
        self._subject = link.layout.subject
        self.buffer_size = buffer_size
        # Up to two batches are out of the buffer at once (`_WINDOW`): keep them to half the
        # bound, so publishers have room while the server works.
        self._max_batch = max(1, min(max_batch, buffer_size // 4))
        self._high_water = max(1, buffer_size // 2)
        self._linger = linger
        self._ack_timeout = ack_timeout
        self.exit_timeout = exit_timeout
        self.label = f"eventbus nats writer to {self._subject!r}"  # for the exit's warning
        self._buffer: deque[Event] = deque()
        self._closed = False
        # Set by the bus: True while a subscription still has to make its first consumer.
        self.hold: Callable[[], bool] = lambda: False
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Everything that belongs to one process: counters, ids, locks, the loop's objects."""
        self._sleeping = False
        self._kicked = False
        self._lock = threading.Lock()  # guards the counters and taking from the buffer
        self._done_cond = threading.Condition(threading.Lock())
        self._finalized = False
        self._refused = 0
        self._refused_otherwise = 0  # of `_refused`: not for a full buffer (not an `Event`, closed)
        self._drops = DropReport(self.label, self.buffer_size)
        # Refused once the stop had begun: a child's own, as its `dropped` is (review 271).
        self._late = LateRefusals(self.label)
        if self._closed:  # a child of a stopped bus: its exit says what it refuses (trial 272)
            self._late.say()
        self._taken = 0
        self._done = 0  # taken events whose fate is settled (written or lost)
        self._written = 0
        self._lost = 0
        self._sender = BatchSender(self._link, ack_timeout=self._ack_timeout, settle=self._settle)
        self._stopped = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if not self._closed:
            self._link.call_soon(self._start)

    def _start(self) -> None:
        self._task = self._link.loop.create_task(self._run())

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: the parent's buffered events are the parent's,
        unless the fork was found late (`fork_announced()` False): the buffer may then hold
        this child's own events too, which cannot be told apart, and the child writes them
        all."""
        if fork_announced():
            self._buffer.clear()
        self._reset_process_state()

    # ------------------------------------------------------------------------------ hot path

    def publish(self, event: Event) -> bool:
        """Buffer `event` and return at once (True); count it as refused if the buffer is full,
        the writer closed or `event` no `Event` (False)."""
        buf = self._buffer
        depth = len(buf)
        # Events on their way count too: at most `buffer_size` events wait in memory.
        # `__class__` first: the exact class is the usual case, and the cheapest test of it
        # (about 60 instructions a call, where `isinstance` alone cost 140).
        if event.__class__ is not Event and not isinstance(event, Event):
            self._refuse(not_an_event=True)  # type: ignore[unreachable]  # untyped callers
            report_not_an_event(event, self.label)
            return False
        if self._closed or depth + self._taken - self._done >= self.buffer_size:
            self._refuse()
            return False
        buf.append(event)
        if self._sleeping or (depth >= self._high_water and not self._kicked):
            self._kick()
        return True

    def _refuse(self, *, not_an_event: bool = False) -> None:
        with self._lock:
            self._refused += 1
            self._refused_otherwise += not_an_event or self._closed  # not for a full buffer
            if self._closed and not not_an_event:
                self._late.count()
            refused = self._refused
        check_fork_when_refusing(refused)

    def _kick(self) -> None:
        # Once per wake, not per event: in a child forked without Python's fork hooks (uWSGI),
        # the link and its loop are still the parent's (see eventbus_core.batching.check_fork).
        check_fork()
        self._kicked = True
        self._sleeping = False
        self._link.call_soon(self._wake.set)

    # ---------------------------------------------------------------------------- the writer

    async def _run(self) -> None:
        sender = self._sender
        window: deque[Batch] = deque()  # sent, acknowledgements not checked yet
        last_activity = time.monotonic()
        held_since: float | None = None
        # Beside the writer, which may wait long on NATS (the first connection, a send): what
        # publish() drops meanwhile is said as it happens, not once NATS is back.
        reporter = asyncio.ensure_future(self._report_drops())
        try:
            await self._link.jetstream()  # the first connection (retried in the background)
            while True:
                if not window and not self._closed and self.hold():
                    # A subscription made while NATS was unreachable starts at the stream's
                    # end once its consumer exists: what this bus stores before would pass it
                    # by uncounted. Wait for it (bounded: its consumer may keep failing).
                    held_since = held_since or time.monotonic()
                    if time.monotonic() - held_since < _HOLD_MAX:
                        await asyncio.sleep(0.01)
                        continue
                else:
                    held_since = None
                events = self._take()
                batch = sender.encode(events) if events else None
                if batch is not None:
                    await sender.send(batch)
                    window.append(batch)
                    last_activity = time.monotonic()
                    if len(window) < _WINDOW:
                        continue  # keep the server busy while the first batch is acknowledged
                if window:
                    await sender.complete(window.popleft())
                    continue
                if self._closed:
                    return
                self._notify_done()
                if time.monotonic() - last_activity >= _DEEP_SLEEP_AFTER:
                    await self._deep_sleep()
                    last_activity = time.monotonic()
                    continue
                self._wake.clear()
                self._kicked = False
                if not self._buffer and not self._closed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._linger):
                            await self._wake.wait()
        except Exception:  # a bug must not silently stop the writer: count, log, restart
            log.exception("eventbus nats writer failed; restarting it")
            sender.give_up_open()
            if not self._closed:
                self._link.call_soon(self._start)
        finally:
            reporter.cancel()
            if not self._closed:
                sender.give_up_open()
            # Closed: drain() cancelled us at the stop deadline and confirms what is open.
            self._notify_done()

    async def _report_drops(self) -> None:
        """Say in the log, at most once a minute, that publish() dropped events (checked each
        second: one comparison)."""
        while True:
            self.report_drops()
            await asyncio.sleep(_DROPS_CHECKED_EVERY)

    def report_drops(self, *, final: bool = False) -> None:
        """Say the refusals for a full buffer not said yet: at most once a minute, or with
        `final` whatever the minute (`eventbus_core.batching.ReportsDrops`)."""
        self._drops.check(self._refused - self._refused_otherwise, final=final)

    async def _deep_sleep(self) -> None:
        # publish() appends first and checks _sleeping after: one side always sees the other.
        self._wake.clear()
        self._sleeping = True
        if self._buffer or self._closed:
            self._sleeping = False
            return
        await self._wake.wait()
        self._sleeping = False

    def _take(self) -> list[Event]:
        buf = self._buffer
        if not buf:
            return []
        popleft = buf.popleft
        with self._lock:
            events = [popleft() for _ in range(min(len(buf), self._max_batch))]
            self._taken += len(events)
        return events

    def _settle(self, written: int, lost: int) -> None:
        with self._lock:
            if self._finalized:
                return  # stop() counted everything unsettled as lost already
            self._done += written + lost
            self._written += written
            self._lost += lost

    def _notify_done(self) -> None:
        with self._done_cond:
            self._done_cond.notify_all()

    # ----------------------------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far is settled; False if `timeout` ran out
        (None: no limit).

        Events given up at stop count as settled, so this never waits for them: a flush that
        a stop ends, or one called after it, returns True (trial 256: False for the first,
        True for the second), as the batching buses' `flush()`.

        Raises:
            TypeError, ValueError: `timeout` is neither None nor a number of seconds (NaN).
        """
        check_stop_timeout(timeout, "flush()")
        check_fork()  # before the lock: in a child no hook told of, it may be the parent's
        with self._lock:
            target = self._taken + len(self._buffer)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._done_cond:
                while self._done < target:
                    if self._stopped:  # given up at stop, and counted (not before: review 258)
                        break
                    self._kick()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    # Short waits: the writer's notify can race with our check.
                    self._done_cond.wait(0.01 if remaining is None else min(remaining, 0.01))
            return True
        finally:
            # A caller reading the log after flush() finds them said, whatever the minute (a
            # server's shutdown flush may be its last word: see Batcher.flush).
            self.report_drops(final=True)

    def pending(self) -> int:
        """Events accepted and not settled yet (buffered, or sent and not acknowledged)."""
        with self._lock:
            return self._taken + len(self._buffer) - self._done

    def settled(self) -> int:
        """Taken events whose fate is settled (written or lost): the exit's measure of
        progress (`eventbus_core.batching.flush_before_exit`)."""
        return self._done

    def unsettled(self) -> tuple[int, int]:
        """`pending()`, and of those the ones sent without an answer (the exit's warning says
        the stream may hold those; events taken but never sent, while the stream was being
        created or the server was away, are not among them, trial 127)."""
        with self._lock:
            taken = self._taken - self._done
            pending = taken + len(self._buffer)
        return pending, min(taken, self._sender.sent_open())

    def close_intake(self) -> None:
        """Refuse further events and wake the writer to send what is left."""
        self._closed = True
        self._kick()

    async def drain(self, deadline: float, confirm_by: float) -> None:
        """On the loop: let the writer finish until `deadline`, then cancel it and, until
        `confirm_by`, learn which of the events it sent without a PubAck yet the stream holds
        (`BatchSender.confirm`); what is still open then is counted lost."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        sender = self._sender
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sender.confirm(), max(0.0, confirm_by - time.monotonic()))
        sender.give_up_open()
        self._notify_done()

    def finish(self, *, settled: bool) -> None:
        """After `drain()`: count what is left as lost. `settled` False means the loop did not
        answer in time: every event not settled by then is counted lost, and the loop may no
        longer change the counts. Drops not said yet are said now."""
        self.report_drops(final=True)
        self._sender.say_refused_now()
        with self._lock:
            leftover = len(self._buffer)
            self._buffer.clear()
            self._taken += leftover
            if settled:
                self._lost += leftover
                self._done += leftover
            else:
                self._finalized = True
                self._lost += self._taken - self._done
                self._done = self._taken
        if self._lost:
            # Not "not in the stream": those sent without a confirmation may be there (the line
            # before says so; all 500 of them were, in trial 125).
            unconfirmed = min(self._sender.unconfirmed, self._lost)
            maybe = (
                f" ({unconfirmed} of them sent without a confirmation: the stream may hold those)"
                if unconfirmed
                else " (none of them reached the stream)"
            )
            log.warning(
                "eventbus nats writer stopped with %d event(s) counted lost%s", self._lost, maybe
            )
        self._late.say()
        self._stopped = True
        self._notify_done()

    @property
    def closed(self) -> bool:
        """True once `close_intake()` was called."""
        return self._closed

    def counts(self) -> tuple[int, int, int]:
        """`(accepted, refused, lost)`: `accepted + refused` is every `publish()` call."""
        with self._lock:
            return self._taken + len(self._buffer), self._refused, self._lost

    def queue_depth(self) -> int:
        """Accepted events not yet settled."""
        return len(self._buffer) + self._taken - self._done

    def figures(self) -> dict[str, Any]:
        """Writer figures for `stats().extra`."""
        sender = self._sender
        return {
            "state": "stopped" if self._stopped else sender.state,
            "connected": self._link.connected,
            # Why the connection is down, if it is (a server refusing it left this at None, then
            # at "no connection", while every event waited: trials 168, 171), else the writer's.
            "last_error": (self._link.last_error if not self._link.connected else None)
            or sender.last_error,
            "written": self._written,
            "batches": sender.batches,
            "write_failures": sender.failures,
            "resent": sender.resent,
            "duplicates": sender.duplicates,
            "lost": self._lost,
            "unconfirmed": sender.unconfirmed,
            "last_log_id": sender.last_seq,
        }

    @property
    def last_seq(self) -> int:
        """Stream sequence (LogID) of the newest event this process wrote."""
        return self._sender.last_seq
