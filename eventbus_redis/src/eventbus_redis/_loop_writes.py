"""`LoopWrites`: the Redis writer's batches, written from the publishing event loop, no thread.

When the batching core drains on the loop (`EVENTBUS_PUBLISH_PATH` `auto` or `asyncio`, and
publish() runs on a loop), each cycle of `BatchWriter` runs here, on the loop, and never waits:

1. it settles the batch whose reply came (recorded by the task below);
2. it takes and encodes the next batch: what is buffered, up to the writer's `max_batch`, as
   the thread does. (An earlier cap of 100 events per batch, to keep each drain short, lost
   events the thread carries: on a saturated loop each step of a batch's round trip waits
   for one of the loop's iterations, about seven steps a batch, and at 8 ms an iteration the
   loop dropped 2,100 of 10,500 events published at about 4,000/s, the thread none; see
   `test_a_saturated_loop_carries_what_the_thread_carries`. Under light traffic a batch holds
   what came in one `linger`, so the drains stay short where requests are fast.);
3. it hands the batch's commands to a task that writes them through an asyncio connection
   (`LoopConnection`, redis-py's asyncio client) and reads the replies. The task does I/O, then
   settles the batch under the cycle lock (`_replied`); it takes no new batch, so events
   published meanwhile still wait for the drainer's `linger` and go together, unless they
   already fill a batch: then it asks for the next cycle at once.

One batch is in flight at a time, as on the thread. Batches go by script (EVALSHA, then EVAL
if Redis lost the script) under the writer's lease. A due renewal (after a quiet spell) makes a
round trip of its own first, as on the thread, and the batch leaves once Redis confirmed it:
sent behind the renewal on one write, a batch was applied under it by a server frozen with both
in its socket buffer, whenever it resumed, seconds after `stop()` had counted it lost (trial
153). A failed batch is parked and retried after the
writer's backoff, from a later cycle, so an outage costs the loop nothing but a timer. A batch
Redis refused because the lease ran out before it arrived (a loop too busy to read replies
and send in time) is no outage: it is sent again at once, under a new lease, as the thread's
write does; only the same batch refused a second time counts as a failure.

A thread may take over at any time: `flush()` or `stop()` called on the loop's own thread, the
loop shutting down, `stop()` itself (its deadline cuts a thread, never the caller). The
thread's first cycle calls `take_back()`: a batch whose replies came is settled from them; one
still on its way is claimed (whatever comes for it is ignored, and its task closes its
connection) and written again by the thread's synchronous path. Never twice: the script skips
a batch number it has applied, and the lease is invalidated first, so the copy still on its
way is refused if it arrives after the thread's renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from eventbus_core import Event
from eventbus_core.batching import Batcher
from eventbus_redis._appender import LeaseRefused, Prepared, ScriptAppender
from eventbus_redis._loop_connection import LoopConnection

if TYPE_CHECKING:
    from eventbus_redis._writer import BatchWriter

__all__ = ["LoopWrites"]

# Those coroutines never start when the loop stops right after it was handed them (a loop
# driven by run_until_complete(), or closed by hand): a thread takes their work over (see the
# module docstring), so Python's warning about them at exit is noise. Those messages only.
for _name in ("LoopWrites._io", "LoopConnection._keep"):
    warnings.filterwarnings(
        "ignore", message=f"coroutine '{_name}' was never awaited", category=RuntimeWarning
    )


@dataclass(slots=True, eq=False)
class _InFlight:
    """A batch handed to its task: what it sends, and what came back."""

    batch: list[Event]
    prepared: Prepared
    commands: list[tuple[Any, ...]]  # the lease's renewal (when due), or the script call
    fallback: tuple[Any, ...] | None  # the script call by EVAL, for a Redis that lost the script
    renewal: str | None  # the token the renewal stores: the batch itself waits for its reply
    conn: LoopConnection
    outcome: list[Any] | BaseException | None = None
    finished_at: float = 0.0  # monotonic time the replies were read
    done: bool = False
    claimed: bool = False  # taken back by a thread: what comes is ignored


class LoopWrites:
    """The loop side of `writer` (see the module's docstring).

    Args:
        writer: The writer whose cycles run here while the loop drains.
        batcher: Its batching core.
        appender: Its appender (the lease, the script, the client's settings).
    """

    def __init__(self, writer: BatchWriter, batcher: Batcher, appender: ScriptAppender) -> None:
        self._writer = writer
        self._batcher = batcher
        self._appender = appender
        self._conn: LoopConnection | None = None
        self._conn_loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: _InFlight | None = None
        self._parked: tuple[list[Event], Prepared] | None = None  # failed: retried at _retry_at
        self._retry_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()  # a task nobody holds may be collected
        self.batches = 0

    # ---------------------------------------------------------------- cycles, on the loop

    def cycle(self, loop: asyncio.AbstractEventLoop) -> bool:
        """One cycle on `loop`: settle the batch whose replies came, send the next one."""
        moved = False
        rec = self._in_flight
        if rec is not None:
            if not rec.done:
                return False  # its task asks for a cycle when the replies are in
            self._in_flight = None
            self._settle(rec)
            moved = True
        if self._parked is not None:
            if time.monotonic() < self._retry_at:
                return moved
            batch, prepared = self._parked
            self._parked = None
        else:
            _first, batch = self._batcher.take(self._writer.max_batch)
            if not batch:
                return moved
            maybe = self._writer.prepare(batch)
            if maybe is None:
                return True  # could not be encoded: settled as lost
            prepared = maybe
        self._send(loop, batch, prepared)
        return True

    def next_due(self, now: float) -> float | None:
        """When a cycle is needed: at once for replies that came, at the end of the backoff for
        a parked batch; None while a task works (it asks for a cycle itself) or nothing waits."""
        rec = self._in_flight
        if rec is not None:
            return 0.0 if rec.done else None
        if self._parked is not None:
            return max(0.0, self._retry_at - now)
        return None

    def park(self, batch: list[Event], prepared: Prepared) -> None:
        """Retry `batch` from the next cycle on the loop (a batch a thread had sent)."""
        self._parked = (batch, prepared)
        self._retry_at = 0.0

    def _connection(self, loop: asyncio.AbstractEventLoop) -> LoopConnection:
        conn = self._conn
        if conn is None or self._conn_loop is not loop:
            if conn is not None:
                conn.discard()  # another loop's: closed on that loop, if it still runs
            conn = self._conn = LoopConnection(self._appender.client)
            conn.hold(loop)
            self._conn_loop = loop
        return conn

    def _send(
        self, loop: asyncio.AbstractEventLoop, batch: list[Event], prepared: Prepared
    ) -> None:
        lease = self._appender.lease
        appender = self._appender
        if lease.due():
            # The renewal alone: the batch follows its reply (`_settle`), see the docstring.
            renewal = lease.renewal()
            rec = _InFlight(
                batch, prepared, [renewal], None, lease.renewal_token, self._connection(loop)
            )
        else:
            rec = _InFlight(
                batch,
                prepared,
                [appender.script_command(prepared)],
                appender.script_command(prepared, "EVAL"),
                None,
                self._connection(loop),
            )
        self._in_flight = rec
        task = loop.create_task(self._io(rec), name="eventbus-redis-loop-write")
        # A loop stopped or closed by hand (not by asyncio.run()) leaves the task pending: the
        # thread that takes over writes its batch again, so its end is no news.
        with contextlib.suppress(AttributeError):
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _io(self, rec: _InFlight) -> None:
        """The task: write the batch, read the replies, settle them (`_replied`)."""
        try:
            replies = await rec.conn.execute(rec.commands, sending=lambda: self._sending(rec))
            if (
                rec.fallback is not None
                and isinstance(replies[-1], redis.exceptions.NoScriptError)
                and not rec.claimed
            ):
                replies[-1:] = await rec.conn.execute([rec.fallback])
            rec.outcome = replies
        except asyncio.CancelledError:
            # The loop is shutting down: the record stays open, and the thread that takes
            # over writes the batch again.
            raise
        except Exception as exc:  # kept for the cycle: counted, reported and retried there
            rec.outcome = exc
        rec.finished_at = time.monotonic()
        rec.done = True
        if rec.claimed or isinstance(rec.outcome, BaseException):
            # Claimed: replies may be on their way to nobody. Failed: its state is unknown.
            if self._conn is rec.conn:
                self._conn = None
            rec.conn.discard()
        if not rec.claimed:
            self._replied(rec)

    def _sending(self, rec: _InFlight) -> None:
        """`rec`'s batch is leaving: in doubt from now on, not before (a batch that never
        reached Redis, for a refused connection or wrong password, is lost for sure if stop()
        gives up on it). Not once claimed: the thread that took it over says when it sends it,
        and may have settled it and moved on to another batch already. Nor for a renewal: its
        batch has not left."""
        if not rec.claimed and rec.renewal is None:
            self._writer.sending(rec.batch)

    def _replied(self, rec: _InFlight) -> None:
        """Settle `rec` at once (flush() may be waiting for it), but take no new batch here: the
        events published meanwhile wait for the drainer's `linger`, so that a steady trickle
        still goes in batches rather than one write per request. A full batch waiting is sent
        from here instead (`drain_now()`: the cycle runs in this callback, not at the loop's
        next iteration, which a saturated server reaches milliseconds later): lingering cannot
        make it larger, and a loop that waited `linger` after every reply carried at most
        `max_batch` events per `linger` (5,000/s with the defaults) below the half-full mark,
        so a faster server (uvicorn on uvloop, 12,000 requests/s) kept about half the buffer
        waiting: a burst found half the room."""
        b = self._batcher
        if not b.cycle_lock.acquire(blocking=False):
            b.wake_now()  # a cycle is running elsewhere: a drain on the loop settles it after
            return
        try:
            if self._in_flight is rec:
                self._in_flight = None
                self._settle(rec)
        finally:
            b.cycle_lock.release()
        b.notify_flush()
        if self._parked is not None and self._retry_at == 0.0:
            b.drain_now()  # refused for the lease: sent again at once
        elif self._parked is None and b.buffered >= self._writer.max_batch:
            b.drain_now()
        elif b.buffered or self._parked is not None:
            b.kick()

    def _settle(self, rec: _InFlight) -> None:
        """Count the batch written, or park it for a retry after the backoff."""
        outcome = rec.outcome
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is None:
                raise redis.ConnectionError("the batch's write ended without a reply")
            if rec.renewal is not None:
                _raise_error(outcome[0])
                self._appender.lease.confirmed(rec.renewal, rec.finished_at)
                # Its batch now leaves, at once, under the confirmed lease.
                self._parked = (rec.batch, rec.prepared)
                self._retry_at = 0.0
                return
            _raise_error(outcome[-1])
            self._appender.applied(outcome[-1])
        except Exception as exc:
            self._parked = (rec.batch, rec.prepared)
            if isinstance(exc, LeaseRefused):
                self._appender.lease.invalidate()  # the next write renews it first
                if not rec.prepared.refused:
                    rec.prepared.refused = True
                    self._retry_at = 0.0  # at once: Redis answered, it is no outage
                    return
            self._retry_at = time.monotonic() + self._writer.write_failed(rec.batch, exc)
            return
        self._writer.recovered()
        self._writer.settle(rec.batch, written=True)
        self.batches += 1

    # ---------------------------------------------------------------------- hand-overs

    def take_back(self) -> tuple[list[Event], Prepared] | None:
        """For a thread's cycle: settle what the loop left, and return the batch the thread must
        write (one still on its way, or parked), if any."""
        rec, self._in_flight = self._in_flight, None
        if rec is not None:
            rec.claimed = True
            self._conn = None  # its task closes it: replies may still be on their way
            if rec.done:
                self._settle(rec)
            else:
                self._appender.lease.invalidate()
                return rec.batch, rec.prepared
        parked, self._parked = self._parked, None
        return parked

    def close(self) -> None:
        """The writer stopped: close the loop's connection (on its loop)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.discard()

    def after_fork_in_child(self) -> None:
        """A forked child: the batch in flight is the parent's, as are its tasks and loop."""
        self._in_flight = None
        self._parked = None
        self._conn = None
        self._conn_loop = None
        self._tasks = set()


def _raise_error(reply: Any) -> None:
    if isinstance(reply, Exception):
        raise reply
