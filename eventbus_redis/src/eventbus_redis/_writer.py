"""`BatchWriter`: what both Redis backends' publish() feeds, drained in batches by a thread or,
when publish() runs on an event loop, by that loop (`LoopWrites`, an asyncio connection).

The buffer, its accounting, the wake protocol (a wake only when the writer sleeps after a quiet
spell or the buffer passes half full), flush and the stop deadline are the batching core's
(`eventbus_core.batching.Batcher`, with blocking cycles: off the loop each batch is a network
round trip, never run on the caller of flush() or stop()). This module is the thread's cycle:
take up to `max_batch`, hand it to the backend's appender (one round trip per batch, with the
next batch encoded while Redis works on the previous one). While Redis is down the writer keeps
its batch, waits with capped exponential backoff and jitter, and retries; meanwhile the buffer
fills and further events are refused and counted, so publish() stays as cheap as ever.

Accounting: every event `publish()` accepted is, in the end, written or lost (given up at
`close()`'s deadline), never both: `written + lost == published` once closed. `written` is what
Redis confirmed. Of the lost, `in_doubt` were in a batch Redis may have received without the
writer reading its reply (frozen or unreachable Redis at the deadline): Redis may have applied
those, so it holds between `written` and `written + in_doubt` of this writer's events. Nobody
can know more by the deadline: the reply is exactly what did not arrive. A forked child
leaves what the parent had not written yet to the parent (`left_to_parent`, see
`after_fork_in_child`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import redis

from eventbus_core import Event, check_count, get_logger
from eventbus_core.batching import Batcher, PublishPath
from eventbus_redis._appender import Prepared, ScriptAppender
from eventbus_redis._client import TRANSIENT_ERRORS, Backoff, safe_error
from eventbus_redis._config_errors import is_not_a_counter, is_refused_outright, is_wrong_type
from eventbus_redis._loop_connection import loop_connection_supported
from eventbus_redis._loop_writes import LoopWrites

__all__ = ["BatchWriter"]

log = get_logger("eventbus.redis")

_CUT_BEFORE: Final = 0.1  # seconds before close()'s deadline at which a blocked write is cut
# What a failed write or reply may raise that the synchronous path retries and reports. Anything
# else is a bug: logged (once) with its traceback, then retried the same way.
_EXPECTED: Final = (redis.RedisError, OSError)


class BatchWriter:
    """Bounded, non-blocking buffer drained in batches by one daemon thread.

    Args:
        appender: Encodes and writes batches (one round trip each); a failed batch is retried.
        buffer_size: Events held before `publish()` refuses (and counts) more; the batches
            being written count too.
        max_batch: Most events per round trip.
        linger: Seconds the writer waits for more events while traffic flows. Long on purpose:
            every wake-up of this thread takes the GIL from the application's event loop, and
            next to a busy server each one cost far more than the write (measured, with the
            other changes: 5 ms cost the middleware benchmark's server 28% of its
            throughput, 50 ms 18-22%). A quiet
            writer is woken by the first publish, and flush() and stop() wake it at once.
        backoff: Reconnect delays after a failed write.
        name: Thread name.
        wrong_type: Added to the error a key of the wrong type causes (names the key setting).
        explain: What to say instead of a failure that is a setting's fault (a database the
            server lacks, credentials it refuses), naming the setting; None for the others.
        path: Who drains (`EVENTBUS_PUBLISH_PATH`): `auto` and `asyncio` write from the event
            loop publish() runs on, through an asyncio connection (`LoopWrites`), else from a
            thread; `thread` always from a thread.
        exit_timeout: Seconds the writer may take to write what is left when the loop that
            writes shuts down, or the interpreter exits, without `close()`.
    """

    def __init__(
        self,
        appender: ScriptAppender,
        *,
        buffer_size: int,
        max_batch: int = 500,
        linger: float = 0.05,
        backoff: Backoff | None = None,
        name: str = "eventbus-redis-writer",
        wrong_type: str = "",
        explain: Callable[[BaseException], str | None] | None = None,
        path: PublishPath = "auto",
        exit_timeout: float = 5.0,
    ) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(
                f"buffer_size must be a positive int, got {buffer_size!r} "
                "(OBSERVABILITY_BUFFER_SIZE when built from settings)"
            )
        check_count("max_batch", max_batch, 1)
        self._appender = appender
        self.buffer_size = buffer_size
        # Up to two batches are out of the buffer at once (one in Redis, one being encoded):
        # keep them to half the bound, so publishers always have room while Redis works.
        self.max_batch = max(1, min(max_batch, buffer_size // 4))
        self._backoff = backoff or Backoff()
        self._wrong_type = wrong_type
        self._explain = explain
        self._in_doubt = 0  # of the lost: in a batch Redis may have applied (reply never read)
        self._in_flight: list[Event] | None = None  # the batch Redis may have, outcome unknown
        # The batch one of whose attempts left and failed without a definite answer (no reply,
        # or an error inside a transaction Redis applied in part): a later refusal of it says
        # nothing of that attempt, so it stays in doubt (review 210).
        self._maybe_applied: list[Event] | None = None
        self._sent: tuple[list[Event], Prepared] | None = None  # sent, reply not read yet
        self._left_to_parent = 0
        self._batches = 0
        self._failures = 0
        self._unexpected_logged = False
        self.state = "idle"
        self.last_error: str | None = None
        self._abort = threading.Event()  # close()'s deadline is near: give up what is left
        self._batcher = Batcher(
            self,
            buffer_size=buffer_size,
            linger=linger,
            # A client redis-py's asyncio connection cannot imitate is written from a thread.
            path=path if loop_connection_supported(appender.client) else "thread",
            label="eventbus redis writer",
            thread_name=name,
            bound_in_flight=True,
            on_thread_exit=appender.reset,
            on_fork_in_child=self._after_fork_reset,
            register_fork=False,  # the bus calls the fork hooks, in its own order
            blocking_cycles=True,  # off the loop, a cycle is a blocking round trip
            exit_timeout=exit_timeout,
            unanswered=self._sent_unanswered,
        )
        self._on_loop = LoopWrites(self, self._batcher, appender)
        # The hot path: buffer `event` and return at once; count it as dropped if full.
        self.publish = self._batcher.publish
        self._batcher.start()

    @property
    def _lock(self) -> threading.Lock:
        """Guards the counters and taking from the buffer (the batcher's)."""
        return self._batcher.lock

    # ---------------------------------------------------------------------------- the cycle

    def cycle(self) -> bool:
        """One round (`BatchClient`). On the loop, `LoopWrites.cycle()`. On a thread: write
        again what the loop left unconfirmed, then take and encode a batch, read the reply to
        the batch sent last time, send the new one."""
        loop = self._batcher.draining_loop()
        if loop is not None:
            if self._sent is not None:  # sent by a thread that handed over: the loop retries
                self._appender.reset()
                self._appender.lease.invalidate()
                self._on_loop.park(*self._sent)
                self._sent = None
            return self._on_loop.cycle(loop)
        taken_back = self._on_loop.take_back()
        if taken_back is not None:
            self._deliver(*taken_back)
        _first, batch = self._batcher.take(self.max_batch)
        prepared = self.prepare(batch) if batch else None
        sent, self._sent = self._sent, None
        if sent is not None:
            self._finish(*sent)
        if batch and prepared is not None:
            self._sent = self._send(batch, prepared)
            return True
        return sent is not None or taken_back is not None

    def next_due(self, now: float) -> float | None:
        """At once while a reply is unread (`BatchClient`); else what the loop side waits for."""
        return 0.0 if self._sent is not None else self._on_loop.next_due(now)

    def prepare(self, batch: list[Event]) -> Prepared | None:
        """Encode `batch`; None (and the batch settled as lost) if it cannot be encoded."""
        try:
            return self._appender.prepare(batch)
        except Exception:  # an event that cannot be encoded must not stop the writer
            log.exception("eventbus redis writer could not encode a batch; it is lost")
            self.settle(batch, written=False)
            return None

    def _send(self, batch: list[Event], prepared: Prepared) -> tuple[list[Event], Prepared] | None:
        if self.state == "connected" and not self._abort.is_set():
            try:
                self._appender.send(prepared, sending=lambda: self.sending(batch))
                return batch, prepared
            except _EXPECTED:
                pass  # the synchronous path below retries and reports
            except Exception as exc:
                self._unexpected(exc)
        self._deliver(batch, prepared)
        return None

    def _finish(self, batch: list[Event], prepared: Prepared) -> None:
        try:
            self._appender.receive(prepared)
        except Exception as exc:  # unknown outcome: retry; the script skips a batch it applied
            if not isinstance(exc, _EXPECTED):
                self._unexpected(exc)
            self._maybe_applied = batch
            self._deliver(batch, prepared)
            return
        self.settle(batch, written=True)

    def _unexpected(self, exc: BaseException) -> None:
        """A failure that is not Redis's (a bug): say so once, with its traceback."""
        if not self._unexpected_logged:
            self._unexpected_logged = True
            log.error(
                "eventbus redis writer: unexpected %s; writing synchronously instead (logged once)",
                safe_error(exc),
                exc_info=exc,
            )

    def _deliver(self, batch: list[Event], prepared: Prepared) -> None:
        """Write `batch` synchronously, retrying through outages until written or given up."""
        while True:
            if self._abort.is_set():
                self.settle(batch, written=False)
                return
            try:
                # In doubt only once it left: a batch Redis never got is no batch Redis may
                # have applied. (Once sent, it stays in doubt through later failed attempts.)
                self._appender.write(prepared, sending=lambda: self.sending(batch))
            except Exception as exc:  # any failure keeps the batch; publish() never sees it
                pause = self.write_failed(batch, exc)
                self._batcher.report_drops()  # the buffer fills meanwhile: say so as it does
                self._abort.wait(pause)
                continue
            self.recovered()
            self.settle(batch, written=True)
            return

    @property
    def has_written(self) -> bool:
        """True once a batch was written: the connection worked."""
        return self._batches > 0

    def write_failed(self, batch: list[Event], exc: BaseException) -> float:
        """Writing `batch` raised `exc`: `failed()`, after taking it out of doubt where the
        error says Redis applied none of it."""
        definite = is_wrong_type(exc) or is_not_a_counter(exc) or is_refused_outright(exc)
        if definite and self._maybe_applied is not batch:
            # The scripts refuse a key of another type, and INCRBY a counter that is not an
            # integer, before writing anything (the transaction goes by script then), and an
            # ACL refuses the command or its keys before it runs.
            self.not_applied(batch)
        elif not definite:
            with self._batcher.lock:
                if batch is self._in_flight:  # it left: Redis may have applied it
                    self._maybe_applied = batch
        return self.failed(exc)

    def failed(self, exc: BaseException) -> float:
        """A batch could not be written: count it, say so (once per kind of trouble), and
        return how long to wait before retrying it (the backoff)."""
        if self._abort.is_set():
            # stop() gave up and cut the connection itself: its own doing, not a failure of
            # Redis's. (The loop path counted it, with last_error "Connection closed by server."
            # for a server that closed nothing, frozen; the thread path never did, trial 177.)
            return self._backoff.next()
        if not isinstance(exc, _EXPECTED):
            self._unexpected(exc)
        self._failures += 1
        message = safe_error(exc)
        if self._wrong_type and is_wrong_type(exc):
            message += f" ({self._wrong_type})"
        elif self._explain is not None:
            # "DB index is out of range; retrying" named no variable (helper-108).
            message = self._explain(exc) or message
        # Unreachable or slow Redis is "reconnecting"; anything else (a wrong password, a key
        # of the wrong type, a read-only replica, out of memory) is "failing": both retry.
        # redis-py's AuthenticationError is a ConnectionError: not an outage.
        outage = isinstance(exc, TRANSIENT_ERRORS) and not isinstance(
            exc, redis.AuthenticationError
        )
        state = "reconnecting" if outage else "failing"
        if self.state != state or message != self.last_error:
            log.warning("eventbus redis writer cannot write (%s); retrying", message)
        self.state = state
        self.last_error = message
        return self._backoff.next()

    def recovered(self) -> None:
        """A batch was written: the writer is connected (and says so after trouble)."""
        # WARNING, as the failure was: a log read at that level ended on "retrying" (trial 215).
        if self.state == "reconnecting":
            log.warning("eventbus redis writer reconnected; writing buffered events")
        elif self.state == "failing":  # Redis answered all along (out of memory, say)
            log.warning("eventbus redis writer writes again; writing buffered events")
        self.state = "connected"
        self._backoff.reset()

    def _sent_unanswered(self) -> int:
        """Events of the batch that left without its reply read (Redis may hold them)."""
        in_flight = self._in_flight
        return len(in_flight) if in_flight is not None else 0

    def sending(self, batch: list[Event]) -> None:
        """`batch` is about to leave: until its reply is read, Redis may or may not apply it
        (set before any byte leaves: conservative)."""
        self._in_flight = batch

    def not_applied(self, batch: list[Event]) -> None:
        """Redis answered that it applied none of `batch`: it is no longer in doubt."""
        with self._batcher.lock:
            if batch is self._in_flight:
                self._in_flight = None

    def settle(self, batch: list[Event], *, written: bool) -> None:
        """Count `batch` written, or lost (in doubt if it was the batch in flight)."""
        n = len(batch)
        with self._batcher.lock:
            doubt = batch is self._in_flight
            if doubt:
                self._in_flight = None
            if batch is self._maybe_applied:
                self._maybe_applied = None
            late = self._batcher.settle_locked(n, delivered=written)
            if written:
                self._batches += 1
            if late:
                # close() already counted this batch as lost and in doubt (it was in flight);
                # its reply came in after all. The figures stop() returned stay final: the
                # subscriptions it ended did not get these events either, and "Redis holds
                # between written and written + in_doubt" stays true.
                if written:
                    log.debug("a batch of %d event(s) in doubt at stop was written after all", n)
            elif not written and doubt:
                self._in_doubt += n

    # ----------------------------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far is written; False if `timeout` ran out.

        Events given up on at stop count as settled, so this never waits for them.
        """
        return self._batcher.flush(timeout)

    def close(self, deadline: float) -> None:
        """Refuse new events; write what was accepted until `deadline` (`time.monotonic()`);
        then count what is left as lost. Returns by the deadline (no network I/O here).

        Batches sent from now on cannot be applied by Redis after the deadline (the lease). A
        write still blocked shortly before it has its connection cut, so the thread ends.
        """
        self._appender.lease.deadline = deadline

        def cut() -> None:
            self._abort.set()
            self._appender.cut()

        self._batcher.close(deadline, cut=cut, cut_before=_CUT_BEFORE)

        def count_in_flight() -> None:
            # A batch still in flight: Redis may have applied it before it stopped answering.
            self._in_doubt += self._sent_unanswered()

        lost = self._batcher.finalize(count_in_flight)
        self._on_loop.close()
        if lost:
            doubt = (
                f"{self._in_doubt} of them in a batch Redis may have applied: extra['in_doubt']"
                if self._in_doubt
                else "none of them reached Redis"
            )
            log.warning(
                "eventbus redis writer stopped with %d event(s) not confirmed written (counted "
                "in lost; %s)",
                lost,
                doubt,
            )
        self.state = "stopped"

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._batcher.closed

    def counts(self) -> tuple[int, int, int]:
        """`(published, dropped, lost)`: accepted, refused, and accepted but given up."""
        b = self._batcher
        with b.lock:
            # After close(), an event a racing publish() slipped in is given up as well.
            return b.accepted, b.refused, b.lost + b.late()

    def figures(self) -> dict[str, Any]:
        """Writer figures for `stats().extra`."""
        return {
            "state": self.state,
            "connected": self.state == "connected",
            "last_error": self.last_error,
            "written": self._batcher.delivered,
            "in_doubt": self._in_doubt,
            "batches": self._batches,
            "batches_on_loop": self._on_loop.batches,
            "write_failures": self._failures,
            "left_to_parent": self._left_to_parent,
            **self._appender.figures(),
        }

    def queue_depth(self) -> int:
        """Accepted events not yet written (nor given up)."""
        return self._batcher.pending()

    # ---------------------------------------------------------------------------------- fork

    def before_fork(self) -> None:
        """Hold the counters' lock across `fork()`, so the child never sees a batch half taken
        from the buffer (and not yet counted). Bounded: a fork never waits long for it."""
        self._batcher.before_fork()

    def after_fork_in_parent(self) -> None:
        """Release what `before_fork()` took."""
        self._batcher.after_fork_in_parent()

    def after_fork_in_child(self) -> None:
        """Give a forked child (gunicorn --preload, multiprocessing) a writer of its own.

        Only the forking thread survives a fork: the writer thread is gone, and any lock held
        at the fork stays locked. Both are rebuilt (the next publish() starts a thread), and
        the connection is forgotten (it is the parent's). What the parent had accepted and not
        written yet (its buffer, the batch it was writing) is the parent's to write: the child
        drops its copies, so nothing is written twice, and counts them in `written` (the
        parent's figures account for them) and in `left_to_parent`, so
        `written + lost == published` holds in the child too.
        """
        self._batcher.after_fork_in_child()

    def _after_fork_reset(self, parent_held: int) -> None:
        self._left_to_parent += parent_held
        self._in_flight = None  # the parent's
        self._maybe_applied = None
        self._sent = None
        self._on_loop.after_fork_in_child()
        self._abort = threading.Event()
        self._appender.after_fork_in_child()
        if not self._batcher.closed:
            self.state = "idle"
